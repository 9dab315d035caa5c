// Builds the native addon with cargo (the Rust workspace two folders up)
// and copies it next to this file as blindfold.node. Run by `npm install`.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const ext = { darwin: 'dylib', win32: 'dll' }[process.platform] || 'so';
const lib = process.platform === 'win32' ? 'blindfold_node.dll' : `libblindfold_node.${ext}`;

console.error('building the Blindfold addon with cargo (the first build compiles tfhe-rs: minutes)…');
execFileSync('cargo', ['build', '--release', '-p', 'blindfold-node'], { cwd: root, stdio: 'inherit' });
let target = path.join(root, 'target');
try {
  const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root }));
  target = meta.target_directory;
} catch (_) { /* the default target directory */ }
const built = path.join(target, 'release', lib);
const dest = path.join(here, 'blindfold.node');
fs.copyFileSync(built, dest + '.tmp');
fs.renameSync(dest + '.tmp', dest);
console.error(`wrote ${dest}`);
