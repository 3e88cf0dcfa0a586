/**
 * Every alarm of sluice, as data (SPEC §5), built from the config by
 * `alarmDefinitions` (the scheduled functions' alarms follow their intervals). The
 * CDK stack turns each into a CloudWatch alarm that notifies the on-call SNS topic;
 * the sandbox evaluates the same definitions against its own metrics and serves their
 * states at `GET /v1/admin/alarms`. Each description names its section of docs/runbooks.md.
 */
import type { SluiceConfig } from '../core/config.ts';
import { FUNCTION_ENTRIES, scheduleSeconds } from './environment.ts';
import { DELIVER_QUEUE, DISTRIBUTE_QUEUE, type QueueDefinition } from './queues.ts';

/** Where a metric comes from; the stack maps each source to the real resource. */
export type MetricSource =
  | { readonly kind: 'sluice'; readonly name: string; readonly dimensions?: Readonly<Record<string, string>> }
  | {
      readonly kind: 'queue';
      readonly queue: 'Distribute' | 'DistributeBulk' | 'Deliver';
      readonly deadLetters: boolean;
      readonly name: QueueMetricName;
    }
  | { readonly kind: 'function'; readonly fn: FunctionName; readonly name: 'Errors' | 'Throttles' };

export type QueueMetricName = 'ApproximateAgeOfOldestMessage' | 'ApproximateNumberOfMessagesVisible';
export type FunctionName = keyof typeof FUNCTION_ENTRIES;

/** The functions a schedule runs (EventBridge in AWS, a timer in the sandbox), and the setting of how often. */
export const SCHEDULED_FUNCTIONS = {
  reconciler: 'reconcileIntervalSeconds',
  canary: 'canaryIntervalSeconds',
} as const satisfies Partial<Record<FunctionName, keyof SluiceConfig>>;
export type ScheduledFunction = keyof typeof SCHEDULED_FUNCTIONS;

/**
 * Whom an alarm calls. `page`: on-call, at any hour: the platform fails, or may lose or
 * hold up events, for every tenant, and only its operators can act. `ticket`: working
 * hours: what one tenant's producer or endpoint does, which sluice contains by itself
 * (its 429s, its quarantine and hold, its disable notice), where the action is to tell
 * that tenant. Every alarm notifies the one on-call topic (SPEC §5); its description
 * starts with its severity's label (SEVERITY_LABEL), which a subscription's filter
 * policy on the message body matches (README → Deploy), so a pager takes only pages.
 */
export type AlarmSeverity = 'page' | 'ticket';

/** What an alarm's description starts with, by severity: the prefix a pager's subscription filters on. */
export const SEVERITY_LABEL: Readonly<Record<AlarmSeverity, string>> = { page: 'PAGE', ticket: 'TICKET' };

export interface AlarmDefinition {
  /** Stable id. */
  readonly name: string;
  readonly severity: AlarmSeverity;
  /** Its section of docs/runbooks.md (a `## <runbook>` heading). */
  readonly runbook: string;
  readonly title: string;
  readonly summary: string;
  /** Several sources are added together (metric math) before the comparison. */
  readonly sources: readonly MetricSource[];
  /** `SampleCount`: how many data points, whatever their values (a run that reported at all). */
  readonly statistic: 'Sum' | 'Maximum' | 'SampleCount';
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
  /**
   * Set on an alarm whose period is a scheduled function's interval: each period holds
   * one of its runs. The sandbox runs its schedules in real time, so its time scale,
   * which shrinks every other alarm's periods, leaves these as they are.
   */
  readonly schedule?: ScheduledFunction;
}

export const RUNBOOK_PATH = 'docs/runbooks.md';

/** The alarm's description as CloudWatch shows it: its severity, what it means and where the runbook is. */
export function alarmDescription(alarm: AlarmDefinition): string {
  return `${SEVERITY_LABEL[alarm.severity]} ${alarm.title}: ${alarm.summary} Runbook: ${RUNBOOK_PATH}#${alarm.runbook}`;
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

/**
 * The API's 5xx answers that are sluice's to fix: API Gateway's 5XXError less the
 * requests Lambda refused as too large (an access log line whose `integrationStatus` is
 * 413: a body past about 4.7 MB, over Lambda's 6 MB invoke limit once API Gateway has
 * base64-encoded it). Those are a producer's mistake, told in the runbook, and counted
 * in REQUESTS_TOO_LARGE_METRIC; in 5XXError any tenant could page on-call with six
 * oversized requests. In AWS a metric filter on the access log counts them, in the
 * sandbox its gateway does.
 */
export const API_SERVER_ERRORS_METRIC = 'ApiServerErrors';

/** Requests Lambda refused as too large to invoke the API function with (see API_SERVER_ERRORS_METRIC): AWS only. */
export const REQUESTS_TOO_LARGE_METRIC = 'RequestsTooLarge';

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

/**
 * Each function's errors and throttles alarms: the scheduled functions' follow their
 * interval (scheduledFunctionAlarm), the others' are read over minutes (functionAlarm).
 */
function functionAlarms(config: SluiceConfig): AlarmDefinition[] {
  return FUNCTIONS.flatMap((fn) => {
    if (fn in SCHEDULED_FUNCTIONS) {
      const interval = config[SCHEDULED_FUNCTIONS[fn as ScheduledFunction]];
      return [
        scheduledFunctionAlarm(fn as ScheduledFunction, 'Errors', 'failed', interval),
        scheduledFunctionAlarm(fn as ScheduledFunction, 'Throttles', 'was throttled', interval),
      ];
    }
    return [functionAlarm(fn, 'Errors', 'failed invocations'), functionAlarm(fn, 'Throttles', 'was throttled')];
  });
}

/** `1 minute`, `5 minutes`, `90 s`. */
function span(seconds: number): string {
  return seconds % 60 === 0 ? `${seconds / 60} minute${seconds === 60 ? '' : 's'}` : `${seconds} s`;
}

/** `one a minute`, `one every 5 minutes`. */
function onceEvery(seconds: number): string {
  return seconds === 60 ? 'one a minute' : `one every ${span(seconds)}`;
}

/**
 * A scheduled function's errors or throttles. It runs once an interval and is not
 * retried (pipeline.ts, operations.ts), so on one-minute periods a function that fails
 * every run breaches one minute per interval: at 180 s two minutes in five, and a
 * "3 of 5 minutes" alarm never fires. Here each period is one interval, a run each; the
 * alarm looks at enough of them to span 5 minutes (N) and fires when min(3, N) of them
 * breach: at the default minute 3 of the last 5, as for the other functions; at 2
 * minutes each of the last 3 runs, at 3 or 4 each of the last 2, and from 5 minutes on
 * the last run alone. A function that fails every run always pages.
 */
function scheduledFunctionAlarm(
  fn: ScheduledFunction,
  metric: 'Errors' | 'Throttles',
  what: string,
  intervalSeconds: number,
): AlarmDefinition {
  // One run a period: the interval it really runs at (also CloudWatch's shortest standard period, a minute, at the least).
  const periodSeconds = scheduleSeconds(intervalSeconds);
  const runs = Math.ceil(300 / periodSeconds);
  const breaching = Math.min(3, runs);
  const which = breaching < runs ? `${breaching} of its last ${runs} runs` : runs === 1 ? 'its last run' : `each of its last ${runs} runs`;
  return {
    ...functionAlarm(fn, metric, what),
    summary: `the ${fn} function ${what} in ${which} (${onceEvery(periodSeconds)}).`,
    periodSeconds,
    evaluationPeriods: runs,
    datapointsToAlarm: breaching,
    schedule: fn,
  };
}

/** How many of the reconciler's intervals may pass without a report before reconciler-stale fires. */
export const RECONCILER_STALE_INTERVALS = 3;

/**
 * The reconciler's heartbeat: each run that gets through its sweep reports
 * `ScheduledObjects` (0 when nothing is listed), so no data point for
 * RECONCILER_STALE_INTERVALS intervals means no run did: its schedule is disabled or
 * gone, or every run fails before it reports (`reconciler-errors` fires too). Missing
 * data breaches. Three intervals, not one: a run lost now and then, or one slower than
 * the one before, leaves an interval without a report and must not page.
 */
function reconcilerStale(intervalSeconds: number): AlarmDefinition {
  // One run a period, as in scheduledFunctionAlarm.
  const periodSeconds = scheduleSeconds(intervalSeconds);
  return {
    name: 'reconciler-stale',
    severity: 'page',
    runbook: 'reconciler-stale',
    title: 'Reconciler stale',
    summary: `no reconciler run has reported a sweep in the last ${span(RECONCILER_STALE_INTERVALS * periodSeconds)} (${RECONCILER_STALE_INTERVALS} of its intervals).`,
    sources: [{ kind: 'sluice', name: 'ScheduledObjects' }],
    statistic: 'SampleCount',
    periodSeconds,
    evaluationPeriods: RECONCILER_STALE_INTERVALS,
    datapointsToAlarm: RECONCILER_STALE_INTERVALS,
    threshold: 1,
    comparison: 'LessThanThreshold',
    missingData: 'breaching',
    schedule: 'reconciler',
  };
}

/** The queue each record-failure metric's function reads (the bulk lane's has the main lane's timeout). */
const RECORD_QUEUES: { readonly [K in keyof typeof RECORD_FAILURE_METRICS]: QueueDefinition } = {
  distributor: DISTRIBUTE_QUEUE,
  delivery: DELIVER_QUEUE,
};

/**
 * How many one-minute periods a queue-fed function's errors alarm looks at: at least 5,
 * and enough to hold three receives of one record that fails at every one. SQS gives
 * such a record back a visibility timeout after each receive (a second or so more each
 * time), so its third failure comes over 2 × the timeout after its first: 4 minutes and
 * a little for the distributor (120 s), 6 for delivery (180 s), spread over one minute
 * more when the first came late in its minute. With 5 periods, a delivery record failing
 * at every receive failed in at most 2 of them, and only dead-letters paged, once SQS had
 * given it up after 8 receives (some 24 minutes).
 */
function recordFailureWindowMinutes(queue: QueueDefinition): number {
  return Math.max(5, Math.floor((2 * queue.visibilityTimeoutSeconds + 61) / 60) + 1);
}

/**
 * A function's errors (its failed invocations, and failed records) or throttles in 3 of
 * the last 5 minutes; a queue-fed function's errors over a longer window, when its
 * queue's visibility timeout needs one (recordFailureWindowMinutes).
 */
function functionAlarm(fn: FunctionName, metric: 'Errors' | 'Throttles', what: string): AlarmDefinition {
  const kind = metric.toLowerCase();
  const recordsOf = metric === 'Errors' && fn in RECORD_FAILURE_METRICS ? (fn as keyof typeof RECORD_FAILURE_METRICS) : undefined;
  const records = recordsOf && RECORD_FAILURE_METRICS[recordsOf];
  const minutes = recordsOf ? recordFailureWindowMinutes(RECORD_QUEUES[recordsOf]) : 5;
  return {
    name: `${fn}-${kind}`,
    severity: 'page',
    runbook: `function-${kind}`,
    title: `${fn} function ${kind}`,
    summary: `the ${fn} function ${records ? `${what} or records` : what} in 3 of the last ${minutes} minutes.`,
    sources: [{ kind: 'function', fn, name: metric }, ...(records ? [{ kind: 'sluice' as const, name: records }] : [])],
    statistic: 'Sum',
    periodSeconds: 60,
    evaluationPeriods: minutes,
    datapointsToAlarm: 3,
    threshold: 0,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  };
}

/** How an alarm on single occurrences judges them: any at all in 5 minutes; no data is none. */
const ANY_IN_FIVE_MINUTES = {
  statistic: 'Sum',
  periodSeconds: 300,
  evaluationPeriods: 1,
  datapointsToAlarm: 1,
  threshold: 0,
  comparison: 'GreaterThanThreshold',
  missingData: 'notBreaching',
} as const satisfies Partial<AlarmDefinition>;

/** The alarms no setting changes. */
const FIXED_ALARMS: readonly AlarmDefinition[] = [
  {
    name: 'canary-stale',
    severity: 'page',
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
    severity: 'page',
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
    name: 'bulk-distributor-backlog-age',
    severity: 'page',
    runbook: 'bulk-distributor-backlog-age',
    title: 'Bulk-lane distributor backlog age',
    summary:
      'the oldest doorbell in the bulk lane (tenants ringing many objects at once) has waited over 15 minutes: their events are that late.',
    sources: [{ kind: 'queue', queue: 'DistributeBulk', deadLetters: false, name: 'ApproximateAgeOfOldestMessage' }],
    statistic: 'Maximum',
    periodSeconds: 60,
    evaluationPeriods: 3,
    datapointsToAlarm: 2,
    threshold: 900,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  {
    name: 'delivery-backlog-age',
    severity: 'page',
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
    // One tenant's producer past its object's rate or cap or its own throttle (each
    // refused with a 429, which it was told to retry later), or its endpoint past the
    // held cap: sluice contains it by itself, and the action is to tell the tenant. It
    // paged on-call for every app whose retry loop ran past its limits for five minutes.
    // Sluice's own failures page elsewhere: events refused `internal` in ingest-5xx, a
    // distributor that lets events outlive the retention period in its backlog alarms
    // and errors, days before the first is dropped.
    severity: 'ticket',
    runbook: 'events-rejected-or-dropped',
    title: 'Events rejected or dropped',
    summary:
      "over 1,000 events in 5 minutes were rejected at ingest (rate, cap, or a key's API throttle: each throttled request counts once), dropped, or not held past a webhook's held cap.",
    sources: [
      { kind: 'sluice', name: 'EventsRejected' },
      // API Gateway refuses these before the API's Lambda, which never sees their events.
      { kind: 'sluice', name: THROTTLED_REQUESTS_METRIC },
      // So are bodies too large for Lambda's invoke (answered 500 by API Gateway, not paged).
      { kind: 'sluice', name: REQUESTS_TOO_LARGE_METRIC },
      // Not what a drop switch discards (reason switch_drop): on-call set it, and counting
      // it here would keep the alarm in ALARM for as long as the switch is on (a runaway
      // writer dropped at 100 events a second), where no new cause would page. It is on
      // the dashboard, and its gap marker tells the subscribers.
      { kind: 'sluice', name: 'EventsDropped', dimensions: { reason: 'retention' } },
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
    // One tenant's object: its producer writes faster than it drains, and the cap bounds
    // it (past it, 429 queue_full), so the action is to tell that tenant. It paged on-call
    // for a burst the next run found drained, and for an object on-call had paused. An
    // object not drained because sluice fails pages elsewhere (distributor-errors,
    // distributor-backlog-age, canary-stale for the leased path).
    severity: 'ticket',
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
    // than clear a minute later and page again at the next report. Runs that fail before
    // they report leave it as it was: reconciler-errors and reconciler-stale page for them.
    missingData: 'ignore',
  },
  {
    name: 'dead-letters',
    severity: 'page',
    runbook: 'dead-letters',
    title: 'Dead letters',
    summary: 'a queue message landed in a dead-letter queue: a doorbell or delivery message that failed at every receive.',
    // A message sluice itself failed on (a bug, a message it cannot read): it pages. A
    // delivery whose endpoint refused it through the whole retry schedule is a customer's
    // endpoint, and files a ticket (deliveries-dead-lettered): the two together are
    // SPEC §5's "any dead letter".
    sources: [
      { kind: 'queue', queue: 'Distribute', deadLetters: true, name: 'ApproximateNumberOfMessagesVisible' },
      { kind: 'queue', queue: 'DistributeBulk', deadLetters: true, name: 'ApproximateNumberOfMessagesVisible' },
      { kind: 'queue', queue: 'Deliver', deadLetters: true, name: 'ApproximateNumberOfMessagesVisible' },
    ],
    // A depth, not a count: any message there at any time of the 5 minutes.
    ...ANY_IN_FIVE_MINUTES,
    statistic: 'Maximum',
  },
  {
    name: 'deliveries-dead-lettered',
    // One tenant's endpoint refused a delivery at each attempt of its schedule (about 28
    // hours): the action is to tell the tenant which events, which can wait for the day.
    // A platform fault that fails every delivery pages within minutes (canary-stale).
    severity: 'ticket',
    runbook: 'deliveries-dead-lettered',
    title: 'Deliveries dead-lettered',
    summary: 'a delivery used up its retries: its endpoint refused it at every attempt of the schedule.',
    sources: [{ kind: 'sluice', name: 'DeadLetters' }],
    ...ANY_IN_FIVE_MINUTES,
  },
  {
    name: 'endpoint-backlog-far-ahead',
    // One tenant's endpoint, slow for what its deliveries bring: its backlog is held in
    // DynamoDB behind times over 15 minutes ahead, and nothing fails, so nothing else
    // tells anyone until it passes the held cap (delivery-backlog-age sees each delivery
    // as it falls due). The action is to tell that tenant, which can wait for the day. A
    // quick endpoint over its rate is held behind 5 seconds of its time at most: only one
    // whose time a version before this one took further ahead files this.
    severity: 'ticket',
    runbook: 'endpoint-backlog-far-ahead',
    title: 'Endpoint backlog far ahead',
    summary:
      "deliveries were held while their release waited for a time over 15 minutes ahead of their endpoint's pace, or given a time that far ahead, in each of the last 5 minutes: an endpoint slower than its deliveries come, its backlog growing.",
    sources: [{ kind: 'sluice', name: 'DeliveriesPacedFarAhead' }],
    statistic: 'Sum',
    // In every minute of five, not any one: a slow moment of a busy endpoint (50 a second
    // to 9 s answers books past 15 minutes within 20 s) stops booking far once it answers
    // quickly again, and its backlog takes its times back within 15 minutes by itself.
    periodSeconds: 60,
    evaluationPeriods: 5,
    datapointsToAlarm: 5,
    threshold: 0,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
  {
    name: 'webhook-disabled',
    // One tenant's endpoint: its owner was told (SNS), its deliveries are held, and the
    // runbook's action is none unless the tenant asks. A platform fault that fails every
    // endpoint pages long before any is disabled: canary-stale within 5 minutes.
    severity: 'ticket',
    runbook: 'webhook-disabled',
    title: 'Webhook disabled',
    summary: 'sluice disabled a webhook (it answered 410, or stayed quarantined too long).',
    sources: [{ kind: 'sluice', name: 'WebhooksDisabled' }],
    ...ANY_IN_FIVE_MINUTES,
  },
  {
    name: 'ingest-5xx',
    severity: 'page',
    runbook: 'ingest-5xx',
    title: 'Ingest 5xx',
    summary:
      "the API answered over 5 server errors in 5 minutes, each 5xx, each event a 202 refused as `internal` (it could not be stored) and each object's reserving write DynamoDB throttled (answered 429).",
    sources: [
      { kind: 'sluice', name: API_SERVER_ERRORS_METRIC },
      // A request some of whose events could not be stored is answered 202, the others
      // accepted: those events are sluice's failure as much as a 500 is, and the ticket
      // that events-rejected-or-dropped files for producers past their limits would not page for them.
      { kind: 'sluice', name: 'EventsRejected', dimensions: { reason: 'internal' } },
      // The events table past its throughput refuses the reserving write, and the events
      // are answered 429 rate_limited, which events-rejected-or-dropped only files a ticket
      // for, with producers past their own limits: the table throttled for every tenant
      // (its quota, on-demand's doubling, the account's) refused every tenant's events,
      // and paged no one.
      { kind: 'sluice', name: 'StorageThrottled' },
    ],
    statistic: 'Sum',
    periodSeconds: 300,
    evaluationPeriods: 1,
    datapointsToAlarm: 1,
    threshold: 5,
    comparison: 'GreaterThanThreshold',
    missingData: 'notBreaching',
  },
];

/**
 * Every alarm of a deployment with this config (the stack's, whose intervals are at
 * least a minute; the sandbox's): the stack creates them, the sandbox evaluates them.
 */
export function alarmDefinitions(config: SluiceConfig): readonly AlarmDefinition[] {
  return Object.freeze([...FIXED_ALARMS, reconcilerStale(config.reconcileIntervalSeconds), ...functionAlarms(config)]);
}
