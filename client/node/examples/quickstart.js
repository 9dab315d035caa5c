// keygen → register → predict with the model's default policy, against
// command 1's server. Run from the repository root:
//   node client/node/examples/quickstart.js
'use strict';
const fs = require('node:fs');
const bf = require('..'); // in your project: require('blindfold') after `npm install ./client/node`

(async () => {
  const client = await bf.Client.connect('http://127.0.0.1:50051'); // { token: '…' } for servers that need one
  for (const m of await client.models()) {
    console.log(`${m.name.padEnd(16)} ${m.params}  ${String(m.bootstraps).padStart(4)} bootstraps  policy ${m.policy.output}`);
  }
  const keys = await client.keygen('digits-mlp', 'my-node-keys'); // secret key stays here (mode 0600)
  const reg = await client.register(keys);
  console.log(`registered ${(reg.bytes / 1e6).toFixed(1)} MB as ${reg.keyId.slice(0, 16)}…`);

  const rows = fs.readFileSync('data/examples/digits-test-5.csv', 'utf8').trim().split('\n').slice(1)
    .map((l) => l.split(',').map(Number));
  const answers = await client.predict('digits-mlp', rows, keys);
  console.log('labels', answers.labels);
  const t = answers.timing;
  console.log(`${t.bootstraps} bootstraps, server ${t.serverEvaluationMs.toFixed(0)} ms, round trip ${t.roundTripMs.toFixed(0)} ms for ${rows.length} rows`);
  console.log(`budget: ${answers.budget.used} of ${answers.budget.limit} answers used`);

  try {
    await client.predictClear('no-such-model', rows);
  } catch (e) {
    if (!(e instanceof bf.NotFound)) throw e;
    console.log(`${e.name} (${e.code}): ${e.message}`);
  }
})().catch((e) => { console.error(e); process.exit(1); });
