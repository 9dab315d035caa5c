// Type declarations of the `blindfold` Node.js package.

export interface ConnectOptions {
  /** Sent as `authorization: Bearer <token>`. */
  token?: string;
  /** Path of a PEM CA certificate, for `https://` servers. */
  caCert?: string;
  /** Deadline of each call, in milliseconds. */
  timeoutMs?: number;
}

/** The owner's hardening policy: what every answer is reduced to. */
export interface Policy {
  output: 'raw' | 'scores' | 'label' | 'top_k';
  topK: number;
  scoresBits: number;
  noise: 'none' | 'gaussian' | 'laplace';
  noiseScale: number;
  clampInputs: boolean;
  members: number;
  aggregate: 'logits' | 'votes';
  answersLimit?: number;
  epsilonLimit?: number;
  delta?: number;
  clampBootstraps: number;
  stageBootstraps: number;
}

export interface ModelInfo {
  name: string;
  description: string;
  /** The tfhe-rs parameter set's name, and its short name ("2_2"…). */
  parameterSet: string;
  params: string;
  classes: number;
  bootstraps: number;
  predictClear: boolean;
  policy: Policy;
}

/** A model's checked client spec. */
export interface ModelSpec {
  readonly name: string;
  readonly parameterSet: string;
  readonly params: string;
  readonly classes: number;
  readonly features: number;
  readonly inputShape: number[];
  readonly policy: Policy;
  readonly bootstraps: number;
  readonly keyswitches: number;
  readonly predictedPError: number;
  readonly circuitSha256: string;
  toJsonString(): string;
}

export interface Answer {
  label: number;
  /** Best classes, best first (top-k policies). */
  labels: number[];
  /** Dequantized (possibly truncated) logits; empty for label policies. */
  scores: number[];
}

export interface Budget {
  model: string;
  used: number;
  /** Absent: unlimited. */
  limit?: number;
  remaining?: number;
  /** Privacy loss spent, for policies with a DP guarantee. */
  epsilon?: number;
  epsilonLimit?: number;
  delta?: number;
}

export interface Timing {
  serverEvaluationMs: number;
  serverQueueMs: number;
  bootstraps: number;
  keyswitches: number;
  roundTripMs: number;
  encryptMs: number;
  decryptMs: number;
}

export interface Answers {
  answers: Answer[];
  labels: number[];
  budget?: Budget;
  timing: Timing;
}

export interface Registration {
  keyId: string;
  bytes: number;
  alreadyRegistered: boolean;
}

export type Rows = Iterable<Iterable<number>>;

export class Keys {
  static load(path: string): Promise<Keys>;
  readonly keyId: string;
  readonly params: string;
  readonly parameterSet: string;
  readonly path: string;
  encrypt(spec: ModelSpec, rows: Rows): Promise<Buffer[]>;
  decrypt(spec: ModelSpec, answer: Uint8Array): Promise<Answer>;
}

export class Client {
  static connect(url?: string, options?: ConnectOptions): Promise<Client>;
  readonly url: string;
  models(): Promise<ModelInfo[]>;
  model(name: string): Promise<ModelSpec>;
  keygen(model: string, path: string, options?: { overwrite?: boolean }): Promise<Keys>;
  register(keys: Keys, progress?: (sent: number, total: number) => void): Promise<Registration>;
  predict(model: string, rows: Rows, keys: Keys): Promise<Answers>;
  predictClear(model: string, rows: Rows): Promise<Answers>;
  budget(model: string): Promise<Budget>;
  deleteKey(key: Keys | string): Promise<void>;
  hasKey(key: Keys | string): Promise<boolean>;
}

export class BlindfoldError extends Error {
  /** gRPC status name (e.g. "NOT_FOUND"), or null for client-side errors. */
  readonly code: string | null;
}
export class ConnectionFailed extends BlindfoldError {}
export class InvalidArgument extends BlindfoldError {}
export class NotFound extends BlindfoldError {}
export class Unauthenticated extends BlindfoldError {}
export class PermissionDenied extends BlindfoldError {}
export class ResourceExhausted extends BlindfoldError {}
export class BudgetExhausted extends ResourceExhausted {}
export class FailedPrecondition extends BlindfoldError {}
export class Unavailable extends BlindfoldError {}
export class DeadlineExceeded extends BlindfoldError {}
export class ServerError extends BlindfoldError {}
export class InvalidAnswer extends BlindfoldError {}
export class InvalidInput extends BlindfoldError {}
export class KeysError extends BlindfoldError {}
export class FileError extends BlindfoldError {}
