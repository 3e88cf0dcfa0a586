/**
 * Errors of the domain. `ApiError` carries one of the SPEC §3 codes and is the
 * only kind of error whose message reaches a client; anything else becomes
 * `internal` with a generic sentence.
 */

export type ErrorCode =
  | 'invalid_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'payload_too_large'
  | 'endpoint_verification_failed'
  | 'limit_exceeded'
  | 'rate_limited'
  | 'queue_full'
  | 'internal';

export const HTTP_STATUS: { readonly [C in ErrorCode]: number } = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  endpoint_verification_failed: 422,
  limit_exceeded: 422,
  rate_limited: 429,
  queue_full: 429,
  internal: 500,
};

export class ApiError extends Error {
  readonly code: ErrorCode;
  /** Seconds a client should wait, for 429s. */
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, message: string, retryAfterSeconds?: number) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  get status(): number {
    return HTTP_STATUS[this.code];
  }
}

/** Thrown when a request body fails validation; lists every problem found. */
export class ValidationError extends ApiError {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super('invalid_request', problems.join('; '));
    this.name = 'ValidationError';
    this.problems = problems;
  }
}

export class ConfigError extends Error {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(`Invalid sluice configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Another holder has the object's lease, and it has not expired. */
export class LeaseHeldError extends Error {
  constructor() {
    super('The object is leased by another distributor');
    this.name = 'LeaseHeldError';
  }
}

/** A newer lease holder exists: this holder's writes are refused. */
export class FencedOutError extends Error {
  constructor() {
    super('The lease was taken over by a newer holder');
    this.name = 'FencedOutError';
  }
}

/** The object's queue cannot take the events asked for. */
export class QueueFullError extends Error {
  readonly depth: number;

  constructor(depth: number) {
    super(`The object's queue holds ${depth} events`);
    this.name = 'QueueFullError';
    this.depth = depth;
  }
}

/** An environment variable a function needs is missing. */
export class MissingEnvironmentError extends Error {
  constructor(name: string) {
    super(`Environment variable ${name} is not set`);
    this.name = 'MissingEnvironmentError';
  }
}
