/**
 * What API Gateway answers by itself, worded once: the stack's gateway responses
 * (lib/constructs/api.ts) and the sandbox, which gives the same answers where it
 * stands in for API Gateway (sandbox/api-server.ts, sandbox/gateway.ts).
 */
export const GATEWAY_MESSAGES = {
  /** No key, or one the authorizer refuses (401). */
  unauthorized: 'Send a valid key as Authorization: Bearer <key>.',
  /** A key whose usage plan is gone: its tenant deleted (403). */
  noUsagePlan: 'This key has no usage plan.',
  /** A key past its usage plan's throttle (429). */
  throttled: 'Too many requests for this key; slow down.',
} as const;
