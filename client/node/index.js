// Blindfold client for Node.js: encrypted predictions against a Blindfold
// server. The cryptography and the gRPC client are the Rust client library
// (blindfold.node, built by `npm install`); this file adds error classes.
'use strict';
const native = require('./blindfold.node');

class BlindfoldError extends Error {
  constructor(message, code) {
    super(message);
    this.name = new.target.name;
    /** gRPC status name (e.g. "NOT_FOUND"), or null for client-side errors. */
    this.code = code;
  }
}
const classes = { BlindfoldError };
for (const [name, parent] of [
  ['ConnectionFailed'], ['InvalidArgument'], ['NotFound'], ['Unauthenticated'],
  ['PermissionDenied'], ['ResourceExhausted'], ['BudgetExhausted', 'ResourceExhausted'],
  ['FailedPrecondition'], ['Unavailable'], ['DeadlineExceeded'], ['ServerError'],
  ['InvalidAnswer'], ['InvalidInput'], ['KeysError'], ['FileError'],
]) {
  const Base = classes[parent || 'BlindfoldError'];
  classes[name] = { [name]: class extends Base {} }[name];
}

// "[Kind CODE] text" from the addon → an instance of the Kind class
function convert(e) {
  const m = /^\[(\w+) ([A-Z_]+|-)\] ([\s\S]*)$/.exec(e && e.message);
  if (!m) return e;
  const Cls = classes[m[1]] || BlindfoldError;
  const err = new Cls(m[3], m[2] === '-' ? null : m[2]);
  err.cause = e;
  return err;
}
const wrap = (p) => p.catch((e) => { throw convert(e); });

function rowsOf(rows) {
  if (rows == null || typeof rows === 'string' || typeof rows[Symbol.iterator] !== 'function') {
    throw new classes.InvalidInput('rows must be an array of rows of numbers', null);
  }
  const out = Array.from(rows, (r) => {
    if (r == null || typeof r === 'number' || typeof r[Symbol.iterator] !== 'function') {
      throw new classes.InvalidInput('rows must be 2-D (one row per prediction); for one row pass [row]', null);
    }
    return Array.from(r, Number);
  });
  return out;
}

class Keys {
  constructor(inner) { this._k = inner; }
  /** Loads keys written by `client.keygen` or `blindfold keygen`. */
  static async load(path) { return new Keys(await wrap(native.loadKeys(String(path)))); }
  get keyId() { return this._k.keyId; }
  get params() { return this._k.params; }
  get parameterSet() { return this._k.parameterSet; }
  get path() { return this._k.path; }
  encrypt(spec, rows) { return wrap(Promise.resolve().then(() => this._k.encrypt(spec, rowsOf(rows)))); }
  decrypt(spec, answer) { return wrap(Promise.resolve().then(() => this._k.decrypt(spec, Buffer.from(answer)))); }
}

class Client {
  constructor(inner) { this._c = inner; }
  /** Connects: `Client.connect(url, { token, caCert, timeoutMs })`. */
  static async connect(url = 'http://127.0.0.1:50051', options = {}) {
    return new Client(await wrap(native.connect(url, options)));
  }
  get url() { return this._c.url; }
  models() { return wrap(this._c.models()); }
  model(name) { return wrap(this._c.model(name)); }
  async keygen(model, path, { overwrite = false } = {}) {
    return new Keys(await wrap(this._c.keygen(model, String(path), overwrite)));
  }
  register(keys, progress) { return wrap(this._c.register(keys._k, progress)); }
  predict(model, rows, keys) {
    return wrap(Promise.resolve().then(() => this._c.predict(model, rowsOf(rows), keys._k)));
  }
  predictClear(model, rows) {
    return wrap(Promise.resolve().then(() => this._c.predictClear(model, rowsOf(rows))));
  }
  budget(model) { return wrap(this._c.budget(model)); }
  deleteKey(key) { return wrap(this._c.deleteKey(key instanceof Keys ? key._k : key)); }
  hasKey(key) { return wrap(this._c.hasKey(key instanceof Keys ? key._k : key)); }
}

module.exports = { Client, Keys, ...classes };
