// The Node.js package against a real Blindfold server (node's test runner).
// Run by tests/tests/node_package.rs, which starts the server and sets
// BLINDFOLD_URL, BLINDFOLD_TOKEN, BLINDFOLD_TOKEN_2, BLINDFOLD_ROWS_CSV and
// BLINDFOLD_CLEAR_JSON (the clear evaluator's logits for those rows).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const bf = require('..');

const URL = process.env.BLINDFOLD_URL;
const TOKEN = process.env.BLINDFOLD_TOKEN;
const TOKEN_2 = process.env.BLINDFOLD_TOKEN_2;
const FAST = 'digits-mlp-fast';
const NO_CLEAR = 'cancer-mlp';
const NOISY = 'digits-noisy-top2';
const PATE = 'digits-pate-fast';
const ROWS = fs.readFileSync(process.env.BLINDFOLD_ROWS_CSV, 'utf8')
  .split('\n').map((l) => l.trim()).filter((l) => l && !/[a-z]/i.test(l))
  .map((l) => l.split(',').map(Number));
const CLEAR = JSON.parse(process.env.BLINDFOLD_CLEAR_JSON);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blindfold-node-'));

let client;
let keys;

test.before(async () => {
  client = await bf.Client.connect(URL, { token: TOKEN });
  keys = await client.keygen(FAST, path.join(tmp, 'fast'));
  const reg = await client.register(keys);
  assert.equal(reg.keyId, keys.keyId);
});

test('models and specs', async () => {
  const models = Object.fromEntries((await client.models()).map((m) => [m.name, m]));
  const fast = models[FAST];
  assert.equal(fast.params, '2_2');
  assert.equal(fast.classes, 10);
  assert.equal(fast.bootstraps, 42);
  assert.equal(fast.policy.output, 'raw');
  assert.equal(models[NO_CLEAR].predictClear, false);
  assert.deepEqual(
    [models[NOISY].policy.output, models[NOISY].policy.topK, models[NOISY].policy.answersLimit],
    ['top_k', 2, 6],
  );
  assert.equal(models[PATE].policy.aggregate, 'votes');
  const spec = await client.model(FAST);
  assert.deepEqual([spec.name, spec.features, spec.classes, spec.params], [FAST, 64, 10, '2_2']);
  assert.equal(spec.circuitSha256.length, 64);
  assert.equal(JSON.parse(spec.toJsonString()).name, FAST);
});

test('keygen writes a private key and reuses it', async () => {
  const mode = fs.statSync(path.join(keys.path, 'client.key')).mode & 0o777;
  assert.equal(mode, 0o600);
  assert.equal(keys.keyId.length, 64);
  const again = await client.keygen(FAST, keys.path);
  assert.equal(again.keyId, keys.keyId);
  assert.equal((await bf.Keys.load(keys.path)).keyId, keys.keyId);
  await assert.rejects(client.keygen(NO_CLEAR, keys.path), bf.KeysError);
});

test('register is idempotent and reports progress', async () => {
  const seen = [];
  const reg = await client.register(keys, (sent, total) => seen.push([sent, total]));
  assert.equal(reg.alreadyRegistered, true);
  // progress calls are queued to this thread; let them run
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(seen.length > 0);
  assert.deepEqual(seen[seen.length - 1], [reg.bytes, reg.bytes]);
  assert.equal(await client.hasKey(keys), true);
});

test('encrypted predictions equal the clear path', async () => {
  const enc = await client.predict(FAST, ROWS, keys);
  const clear = await client.predictClear(FAST, ROWS);
  assert.equal(enc.answers.length, ROWS.length);
  enc.answers.forEach((a, i) => {
    assert.deepEqual(a.scores, CLEAR[i], `row ${i}`);
    assert.deepEqual(a.scores, clear.answers[i].scores, `row ${i}`);
  });
  assert.deepEqual(enc.labels, clear.labels);
  assert.equal(enc.timing.bootstraps, 42 * ROWS.length);
  assert.ok(enc.timing.roundTripMs >= enc.timing.serverEvaluationMs);
  assert.ok(enc.timing.serverEvaluationMs > 0 && enc.timing.encryptMs > 0);
  assert.equal(enc.budget.model, FAST);
  // typed arrays are rows too
  const typed = await client.predict(FAST, [Float64Array.from(ROWS[0])], keys);
  assert.deepEqual(typed.answers[0].scores, CLEAR[0]);
  // more rows than one request takes: sent in batches, answered in order
  const many = await client.predictClear(FAST, [...ROWS, ...ROWS, ...ROWS, ...ROWS]);
  assert.deepEqual(many.answers.map((a) => a.scores), [...CLEAR, ...CLEAR, ...CLEAR, ...CLEAR]);
});

test('budgets and policies', async () => {
  const b = await client.budget(NOISY);
  assert.equal(b.limit, 6);
  const a = await client.predictClear(NOISY, ROWS.slice(0, 2));
  assert.ok(a.answers.every((x) => x.labels.length === 2 && x.scores.length === 0));
  assert.equal(a.budget.used, b.used + 2);
  await assert.rejects(client.predictClear(NOISY, ROWS.concat(ROWS)), (e) => {
    assert.ok(e instanceof bf.BudgetExhausted && e instanceof bf.ResourceExhausted);
    assert.equal(e.code, 'RESOURCE_EXHAUSTED');
    return true;
  });
  const p = await client.predictClear(PATE, ROWS.slice(0, 1));
  assert.ok(p.budget.epsilon > 0 && p.budget.epsilon <= 10);
});

test('encrypt and decrypt alone', async () => {
  const spec = await client.model(FAST);
  const blobs = await keys.encrypt(spec, ROWS.slice(0, 2));
  assert.equal(blobs.length, 2);
  assert.ok(blobs.every((b) => Buffer.isBuffer(b) && b.length > 100));
  await assert.rejects(keys.encrypt(spec, [ROWS[0].slice(0, 10)]), bf.InvalidInput);
  await assert.rejects(keys.decrypt(spec, Buffer.alloc(64)), bf.InvalidAnswer);
  await assert.rejects(keys.encrypt(await client.model(NO_CLEAR), ROWS.slice(0, 1)), bf.KeysError);
});

test('every error class', async () => {
  await assert.rejects(client.model('no-such-model'), (e) => {
    assert.ok(e instanceof bf.NotFound && e instanceof bf.BlindfoldError);
    assert.equal(e.code, 'NOT_FOUND');
    assert.match(e.message, /no-such-model/);
    return true;
  });
  const stranger = await bf.Client.connect(URL, { token: 'not-a-token-of-this-server' });
  await assert.rejects(stranger.models(), bf.Unauthenticated);
  await assert.rejects(client.predictClear(NO_CLEAR, [new Array(30).fill(0)]), bf.PermissionDenied);
  await assert.rejects(client.predictClear(FAST, [[1, 2]]), bf.InvalidInput);
  await assert.rejects(client.predict(FAST, [new Array(64).fill(NaN)], keys), bf.InvalidInput);
  await assert.rejects(client.predict(FAST, ROWS[0], keys), bf.InvalidInput);
  await assert.rejects(bf.Keys.load(path.join(tmp, 'nothing-here')), bf.KeysError);
  const bob = await bf.Client.connect(URL, { token: TOKEN_2 });
  await assert.rejects(bob.predict(FAST, ROWS.slice(0, 1), keys), (e) => {
    assert.ok(e instanceof bf.NotFound);
    assert.match(e.message, /register/);
    return true;
  });
  const port = await new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
  await assert.rejects(bf.Client.connect(`http://127.0.0.1:${port}`), bf.ConnectionFailed);
  await assert.rejects(bf.Client.connect('not a url'), bf.ConnectionFailed);
  await assert.rejects(bf.Client.connect(URL, { timeoutMs: -1 }), bf.InvalidInput);
});

test('delete a key', async () => {
  const k = await client.keygen(FAST, path.join(tmp, 'short-lived'));
  await client.register(k);
  assert.equal(await client.hasKey(k.keyId), true);
  await client.deleteKey(k);
  assert.equal(await client.hasKey(k), false);
  await assert.rejects(client.predict(FAST, ROWS.slice(0, 1), k), bf.NotFound);
});

test('the event loop keeps running during a prediction', async () => {
  let ticks = 0;
  const timer = setInterval(() => { ticks += 1; }, 5);
  await client.predict(FAST, ROWS.slice(0, 2), keys);
  clearInterval(timer);
  assert.ok(ticks >= 5, `${ticks} ticks`);
});
