/**
 * Every alarm of sluice, as data (SPEC §5). The CDK stack turns each into a
 * CloudWatch alarm that notifies the on-call SNS topic; the sandbox evaluates the
 * same definitions against its own metrics and serves their states at
 * `GET /v1/admin/alarms`. Each description names its section of docs/runbooks.md.
 */
import { FUNCTION_ENTRIES } from './environment.ts';

/** Where a metric comes from; the stack maps each source to the real resource. */
export type MetricSource =
  | { readonly kind: 'sluice'; readonly name: string }
  | { readonly kind: 'queue'; readonly queue: 'Distribute' | 'Deliver'; readonly deadLetters: boolean; readonly name: QueueMetricName }
  | { readonly kind: 'function'; readonly fn: FunctionName; readonly name: 'Errors' | 'Throttles' }
  | { readonly kind: 'api'; readonly name: '5XXError' };

export type QueueMetricName = 'ApproximateAgeOfOldestMessage' | 'ApproximateNumberOfMessagesVisible';
export type FunctionName = keyof typeof FUNCTION_ENTRIES;

export interface AlarmDefinition {
  /** Stable id. */
  readonly name: string;
  /** Its section of docs/runbooks.md (a `## <runbook>` heading). */
  readonly runbook: string;
  readonly title: string;
  readonly summary: string;
  /** Several sources are added together (metric math) before the comparison. */
  readonly sources: readonly MetricSource[];
  readonly statistic: 'Sum' | 'Maximum';
  readonly periodSeconds: number;
  readonly evaluationPeriods: number;
  readonly datapointsToAlarm: number;
  readonly threshold: number;
  readonly comparison: 'GreaterThanThreshold' | 'LessThanThreshold';
  /**
   * What no data means: no events (not breaching), no canary (breaching), or no report
   * yet from a scheduled function that reports less often than the period (ignore: the
   * alarm keeps its state until the next report).
   */
  readonly missingData: 'notBreaching' | 'breaching' | 'ignore';
}

export const RUNBOOK_PATH = 'docs/runbooks.md';

/** The alarm's description as CloudWatch shows it: what it means and where the runbook is. */
export function alarmDescription(alarm: AlarmDefinition): string {
  return `${alarm.title}: ${alarm.summary} Runbook: ${RUNBOOK_PATH}#${alarm.runbook}`;
}

/**
 * The namespace of every function's metrics. They carry one dimension, `service`, whose
 * value is the deployment's own (lib/sluice.ts `metricsService`): two deployments in one
 * account and region share the namespace, and their alarms must not read each other's.
 */
export const METRICS_NAMESPACE = 'Sluice';

/**
 * Requests API Gateway refused for their key's throttle (its usage plan) or the
 * account's, outside the health check: in AWS a metric filter on the API's access log
 * counts them (lib/constructs/api.ts), in the sandbox its gateway does.
 */
export const THROTTLED_REQUESTS_METRIC = 'RequestsThrottled';

const FUNCTIONS = Object.keys(FUNCTION_ENTRIES) as FunctionName[];

/**
 * The queue-fed functions report a failed record to SQS alone (a partial batch
 * response), which fails no invocation: Lambda's `Errors` never counts it. Each such
 * record is counted in this metric, and its function's errors alarm adds it in.
 */
export const RECORD_FAILURE_METRICS = {
  distributor: 'DistributorRecordsFailed',
  delivery: 'DeliveryRecordsFailed',
} as const satisfies Partial<Record<FunctionName, string>>;

/** A function's errors (its failed invocations, and failed records) or throttles in 3 of the last 5 minutes. */
function functionAlarm(fn: FunctionName, metric: 'Errors' | 'Throttles', what: string): AlarmDefinition {
  const kind = metric.toLowerCase();
  const records =
    metric === 'Errors' && fn in RECORD_FAILURE_METRICS ? RECORD_FAILURE_METRICS[fn as keyof typeof RECORD_FAILURE_METRICS] : undefined;
  return {
    name: `${fn}-${kind}`,
    runbook: `function-${kind}`,
    title: `${fn} function ${kind}`,
    summary: `the ${fn} function ${records ? `${what} or records` : what} in 3 of the last 5 minutes.`,
    sources: [{ kind: 'function', fn, name: metric }, ...(records ? [{ kind: 'sluice' as const, name: records }] : [])],
    statistic: 'Sum',
    periodSeconds: 60,
    evaluationPeriods: 5,
    datapointsToAlarm: 3,
    threshold: 0,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  };
}

export const ALARMS: readonly AlarmDefinition[] = [
  {
    name: 'canary-stale',
    runbook: 'canary-stale',
    title: 'Canary stale',
    summary: 'no synthetic canary event has been delivered end to end in 5 minutes.',
    sources: [{ kind: 'sluice', name: 'CanaryDelivered' }],
    statistic: 'Sum',
    periodSeconds: 300,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    threshold: 1,
    comparison: 'LessThanThreshold',
    missingData: 'breaching',
  },
  {
    name: 'distributor-backlog-age',
    runbook: 'distributor-backlog-age',
    title: 'Distributor backlog age',
    summary: 'the oldest doorbell has waited over 2 minutes for a distributor.',
    sources: [{ kind: 'queue', queue: 'Distribute', deadLetters: false, name: 'ApproximateAgeOfOldestMessage' }],
    statistic: 'Maximum',
    periodSeconds: 60,
    evaluationPeriods: 3,
    datapointsToAlarm: 2,
    threshold: 120,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  {
    name: 'delivery-backlog-age',
    runbook: 'delivery-backlog-age',
    title: 'Delivery backlog age',
    summary: 'a delivery reached a delivery function over 5 minutes after it was due.',
    // How late the delivery function received messages after they were due (it reports
    // each batch's latest), not the queue's ApproximateAgeOfOldestMessage: that counts
    // from the send, and retries wait out delays of up to 15 minutes in this queue on purpose.
    sources: [{ kind: 'sluice', name: 'DeliveryQueueLag' }],
    statistic: 'Maximum',
    periodSeconds: 60,
    evaluationPeriods: 3,
    datapointsToAlarm: 2,
    threshold: 300,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  {
    name: 'events-rejected-or-dropped',
    runbook: 'events-rejected-or-dropped',
    title: 'Events rejected or dropped',
    summary:
      "over 1,000 events in 5 minutes were rejected at ingest (rate, cap, or a key's API throttle: each throttled request counts once), dropped, or not held past a webhook's held cap.",
    sources: [
      { kind: 'sluice', name: 'EventsRejected' },
      // API Gateway refuses these before the API's Lambda, which never sees their events.
      { kind: 'sluice', name: THROTTLED_REQUESTS_METRIC },
      { kind: 'sluice', name: 'EventsDropped' },
      { kind: 'sluice', name: 'EventsHeldOverflow' },
    ],
    statistic: 'Sum',
    periodSeconds: 300,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    threshold: 1_000,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  {
    name: 'object-queue-near-cap',
    runbook: 'object-queue-near-cap',
    title: 'Object queue near its cap',
    summary: 'an object queue holds over 80 % of objectQueueCap events.',
    sources: [{ kind: 'sluice', name: 'ObjectsNearCap' }],
    statistic: 'Maximum',
    periodSeconds: 60,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    threshold: 0,
    comparison: 'GreaterThanThreshold',
    // Only the reconciler reports it, every reconcileIntervalSeconds (60 by default, up
    // to an hour): between its reports the alarm keeps what the last one said, rather
    // than clear a minute later and page again at the next report.
    missingData: 'ignore',
  },
  {
    name: 'dead-letters',
    runbook: 'dead-letters',
    title: 'Dead letters',
    summary: 'a delivery used up its retries, or a queue message landed in a dead-letter queue.',
    sources: [
      { kind: 'sluice', name: 'DeadLetters' },
      { kind: 'queue', queue: 'Distribute', deadLetters: true, name: 'ApproximateNumberOfMessagesVisible' },
      { kind: 'queue', queue: 'Deliver', deadLetters: true, name: 'ApproximateNumberOfMessagesVisible' },
    ],
    statistic: 'Maximum',
    periodSeconds: 300,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    threshold: 0,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  {
    name: 'webhook-disabled',
    runbook: 'webhook-disabled',
    title: 'Webhook disabled',
    summary: 'sluice disabled a webhook (it answered 410, or stayed quarantined too long).',
    sources: [{ kind: 'sluice', name: 'WebhooksDisabled' }],
    statistic: 'Sum',
    periodSeconds: 300,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    threshold: 0,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  {
    name: 'ingest-5xx',
    runbook: 'ingest-5xx',
    title: 'Ingest 5xx',
    summary: 'the API answered over 5 server errors in 5 minutes.',
    sources: [{ kind: 'api', name: '5XXError' }],
    statistic: 'Sum',
    periodSeconds: 300,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    threshold: 5,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  ...FUNCTIONS.flatMap((fn) => [functionAlarm(fn, 'Errors', 'failed invocations'), functionAlarm(fn, 'Throttles', 'was throttled')]),
];
