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

/**
 * The request content types API Gateway passes the API function as bytes (base64)
 * rather than as text it decoded: all of them, so that the API reads every body's
 * bytes as the sandbox does (functions/api/app.ts refuses a body not in UTF-8).
 */
export const API_BINARY_MEDIA_TYPES: readonly string[] = ['*/*'];
