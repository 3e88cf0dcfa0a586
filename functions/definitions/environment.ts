/**
 * The environment variables the functions read, named once so the CDK stack that
 * sets them and the handlers that read them cannot disagree. The whole config travels
 * in one more, core/config.ts's CONFIG_ENV, beside the reader that parses it.
 */
export const ENV = {
  eventsTable: 'EVENTS_TABLE',
  controlTable: 'CONTROL_TABLE',
  distributeQueueUrl: 'DISTRIBUTE_QUEUE_URL',
  /** The doorbells' bulk lane (core/lanes.ts). */
  distributeBulkQueueUrl: 'DISTRIBUTE_BULK_QUEUE_URL',
  deliverQueueUrl: 'DELIVER_QUEUE_URL',
  /** Secrets Manager secret whose JSON field `token` is the admin key without its `ak_` prefix. */
  adminKeySecretArn: 'ADMIN_KEY_SECRET_ARN',
  /** API Gateway API key value of the admin's usage plan. */
  adminUsageKey: 'ADMIN_USAGE_KEY',
  /** SNS topic told when a webhook is disabled (its owner subscribes). */
  webhookDisabledTopicArn: 'WEBHOOK_DISABLED_TOPIC_ARN',
  /** The API's base URL (the canary publishes through it). */
  apiUrl: 'API_URL',
  /** Secrets Manager secret that holds the canary tenant's API key (adapters/canary-key.ts). */
  canaryKeySecretArn: 'CANARY_KEY_SECRET_ARN',
  /** The canary receiver's function URL (the canary webhook's target). */
  canaryReceiverUrl: 'CANARY_RECEIVER_URL',
  restApiId: 'REST_API_ID',
  apiStage: 'API_STAGE',
} as const;

/**
 * Every function's memory (MB) unless its stage sets its own. Lambda gives a function
 * CPU in proportion to its memory: a whole vCPU at 1,769 MB, so about 0.29 at 512.
 */
export const FUNCTION_MEMORY_MB = 512;

/** The API function's timeout (s): API Gateway answers 504 at 29 s whatever the function does. */
export const API_TIMEOUT_SECONDS = 29;

/**
 * How long API Gateway keeps its TOKEN authorizer's answer for one Authorization
 * header (the sandbox keeps it as long): a key refused, or rotated away, may still be
 * allowed this long from the cache, and a refusal is kept as long.
 */
export const AUTHORIZER_CACHE_SECONDS = 60;

/** The canary's timeout (s): a run makes a few API calls of at most 15 s each. */
export const CANARY_TIMEOUT_SECONDS = 60;

/**
 * How often a scheduled function (the reconciler, the canary) runs in AWS (s): its
 * schedule's rate, which is a minute at the least (EventBridge's), whatever shorter
 * interval the config asks for.
 */
export function scheduleSeconds(intervalSeconds: number): number {
  return Math.max(60, intervalSeconds);
}

/**
 * The reconciler's timeout (s): a run ends before the next (EventBridge runs it every
 * minute at most often), and within 5 minutes.
 */
export function reconcilerTimeoutSeconds(reconcileIntervalSeconds: number): number {
  return Math.min(300, scheduleSeconds(reconcileIntervalSeconds));
}

/** The functions of sluice and their entry files, relative to the repository root. */
export const FUNCTION_ENTRIES = {
  api: 'functions/api/handler.ts',
  authorizer: 'functions/authorizer/handler.ts',
  distributor: 'functions/distributor/handler.ts',
  delivery: 'functions/delivery/handler.ts',
  reconciler: 'functions/reconciler/handler.ts',
  canary: 'functions/canary/handler.ts',
  canaryReceiver: 'functions/canary/receiver.ts',
} as const;

/** The REST API stage: URLs read https://<api>.execute-api.<region>.amazonaws.com/live/v1/…. */
export const API_STAGE_NAME = 'live';
