/**
 * The sandbox (SPEC §6): the whole of sluice in one process. The emulators stand
 * in for DynamoDB and SQS, on a thread of their own; the API runs the same Hono app
 * and authorizer as in AWS, on another (api-thread.ts); on this one, pollers call
 * the same Lambda handlers with Lambda's event shapes, and the scheduled functions
 * run on timers. Metrics, alarms and notices are kept here.
 */
import { randomBytes } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { documentClient, sqsClient } from '../functions/adapters/aws.ts';
import { TableCanaryKey } from '../functions/adapters/canary-key.ts';
import { CanaryStore } from '../functions/adapters/canary-store.ts';
import { RecordingNotifier, SnsNotifier } from '../functions/adapters/notifier.ts';
import { Logger, loggerPort } from '../functions/adapters/powertools.ts';
import { type CanaryDeps, runCanary } from '../functions/app/canary.ts';
import { type ReconcileReport, reconcile } from '../functions/app/reconciler.ts';
import { deliveryDeps, distributor, reconcilerDeps, type Wiring } from '../functions/app/runtime.ts';
import { buildConfig, ingestGraceProblem, problemsReading, type SluiceConfig, withProblems } from '../functions/core/config.ts';
import { keyKind } from '../functions/core/keys.ts';
import type { LoggerPort } from '../functions/core/telemetry.ts';
import { CANARY_TIMEOUT_SECONDS, reconcilerTimeoutSeconds } from '../functions/definitions/environment.ts';
import { DELIVER_QUEUE, DISTRIBUTE_BULK_QUEUE, DISTRIBUTE_QUEUE } from '../functions/definitions/queues.ts';
import { CONTROL_TABLE, EVENTS_TABLE } from '../functions/definitions/tables.ts';
import { makeDeliveryHandler } from '../functions/delivery/process.ts';
import { makeDistributorHandler, type SqsHandler } from '../functions/distributor/process.ts';
import { AlarmEvaluator, type AlarmState } from './alarms.ts';
import { startApiOnThread } from './api-thread.ts';
import { claimDataDir } from './data-dir.ts';
import { createQueues, createTables, type Emulators, type SandboxQueue, startEmulatorsOnThread } from './emulators.ts';
import { InMemoryMetrics } from './metrics.ts';
import { type CallObserver, type ObservedService, observeCalls } from './observe.ts';
import { Poller, type ReceiveObserver } from './poller.ts';
import { localSnsClient, SANDBOX_WEBHOOK_DISABLED_TOPIC } from './sns.ts';
import { asFunction, enforceTableAccess, runningAs } from './table-access.ts';
import { everyOneAtATime, InFlight, type SandboxThreadError } from './threads.ts';

export interface SandboxOptions {
  /** API port; 0 picks a free one. */
  readonly port?: number;
  readonly host?: string;
  readonly adminKey?: string;
  /** Config overrides on top of the defaults; allowPrivateTargets is always on. */
  readonly config?: Readonly<Record<string, unknown>>;
  /** Persist emulator state here (SLUICE_DATA_DIR). */
  readonly dataDir?: string;
  /** Run the canary on its schedule (default true). */
  readonly canary?: boolean;
  /** Shrinks every alarm period and the monitors' interval (tests: 0.01 turns 5 minutes into 3 s). */
  readonly alarmTimeScale?: number;
  /** Called with every AWS call the sandbox makes, on any of its threads (the benchmark counts them). */
  readonly onCall?: CallObserver;
  /** Called after every function invocation with its duration (the benchmark's Lambda accounting). */
  readonly onInvocation?: (fn: string, durationMs: number) => void;
  /** Called with every batch an event source mapping receives (the benchmark's stage waits). */
  readonly onReceive?: ReceiveObserver;
  /**
   * Called when the emulator or API thread stops on its own after the start: the
   * sandbox is then half alive (`npm start` exits). By default it is logged as an error.
   */
  readonly onFailure?: (error: SandboxThreadError) => void;
  /** How long the API keeps an authorizer's answer (API Gateway's cache; tests shorten it). @default AUTHORIZER_CACHE_SECONDS */
  readonly authorizerCacheMs?: number;
  /** Powertools log level for the functions; the sandbox is quiet by default. */
  readonly logLevel?: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR' | 'SILENT';
}

export interface Sandbox {
  readonly url: string;
  readonly adminKey: string;
  readonly config: SluiceConfig;
  readonly metrics: InMemoryMetrics;
  readonly notifier: RecordingNotifier;
  readonly wiring: Wiring;
  readonly emulators: Emulators;
  readonly queues: Readonly<Record<string, SandboxQueue>>;
  /** Runs the reconciler now (it also runs every reconcileIntervalSeconds). */
  reconcile(): Promise<ReconcileReport>;
  /** Runs the canary now (it also runs every canaryIntervalSeconds). */
  runCanary(): Promise<void>;
  /** The alarm states, as GET /v1/admin/alarms serves them. */
  alarms(): AlarmState[];
  stop(): Promise<void>;
}

export async function startSandbox(options: SandboxOptions = {}): Promise<Sandbox> {
  const adminKey = options.adminKey ?? `ak_${randomBytes(32).toString('base64url')}`;
  const adminKeyProblems =
    keyKind(adminKey) === 'admin' ? [] : ['SLUICE_ADMIN_KEY must be ak_ followed by 20 to 200 letters, digits, - or _'];
  // The sandbox runs the API function as AWS does, and as there an ingest that outlives
  // the grace stores an event no turn delivers, answered accepted (see ingestGraceProblem).
  const graceProblem = ingestGraceProblem(undefined, options.config?.ingestGraceMs);
  // One ConfigError lists them all: what the caller met reading its settings (main.ts's
  // PORT), the admin key's problem and the settings' own.
  const overrides = { ...options.config, allowPrivateTargets: true };
  const config = buildConfig(
    withProblems(overrides, [...problemsReading(options.config ?? {}), ...adminKeyProblems, ...(graceProblem ? [graceProblem] : [])]),
  );
  const logger = new Logger({ serviceName: 'sluice-sandbox', logLevel: options.logLevel ?? 'WARN' });
  const log: LoggerPort = loggerPort(logger);
  const metrics = new InMemoryMetrics();
  // SNS "webhook disabled" notices are kept here (and served at /sandbox/notifications).
  const notifier = new RecordingNotifier();

  const onFailure = options.onFailure ?? ((error: SandboxThreadError) => log.error('A sandbox thread stopped', { error }));
  // One sandbox per data folder: another one on it is refused here, with its process named.
  const releaseDataDir = options.dataDir ? claimDataDir(options.dataDir) : () => {};
  const emulators = await startEmulatorsOnThread(options.dataDir, onFailure).catch((error: unknown) => {
    releaseDataDir();
    throw error;
  });
  const tableNames = await createTables(new DynamoDBClient({ ...emulators.dynamo }), {
    ...(options.dataDir && { dataDir: options.dataDir }),
  });
  const instrument = <C extends { middlewareStack: unknown }>(client: C, service: ObservedService): C => {
    if (options.onCall) observeCalls(client, service, options.onCall);
    return client;
  };
  const sqs = instrument(sqsClient({ ...emulators.sqs, maxSockets: 256 }), 'sqs');
  // What AWS does itself, not sluice's functions (CloudFormation creates the queues,
  // CloudWatch reads their depth, at no request charge): on a client nobody counts.
  const awsItself = sqsClient({ ...emulators.sqs });
  const queues = await createQueues(awsItself);
  const distributeQueue = queues[DISTRIBUTE_QUEUE.logicalName] as SandboxQueue;
  const distributeBulkQueue = queues[DISTRIBUTE_BULK_QUEUE.logicalName] as SandboxQueue;
  const deliverQueue = queues[DELIVER_QUEUE.logicalName] as SandboxQueue;
  const dynamo = instrument(documentClient({ ...emulators.dynamo, maxSockets: 256 }), 'dynamodb');
  // Each function's calls are refused where its role would refuse them in AWS.
  enforceTableAccess(dynamo, {
    events: tableNames[EVENTS_TABLE.logicalName] as string,
    control: tableNames[CONTROL_TABLE.logicalName] as string,
  });
  // The functions publish notices through SNS's SDK client as in AWS (counted like every
  // AWS call); the sandbox's SNS keeps them in `notifier`.
  const sns = instrument(
    localSnsClient((notice) => void notifier.webhookDisabled(notice)),
    'sns',
  );
  const published = new SnsNotifier({ client: sns, topicArn: SANDBOX_WEBHOOK_DISABLED_TOPIC });
  const wiring: Wiring = {
    config,
    dynamo,
    sqs,
    eventsTable: tableNames[EVENTS_TABLE.logicalName] as string,
    controlTable: tableNames[CONTROL_TABLE.logicalName] as string,
    distributeQueueUrl: distributeQueue.url,
    distributeBulkQueueUrl: distributeBulkQueue.url,
    deliverQueueUrl: deliverQueue.url,
    metrics,
    logger: log,
  };

  let stopped = false;
  const alarmTimeScale = options.alarmTimeScale ?? 1;
  const alarms = new AlarmEvaluator(metrics, config, { timeScale: alarmTimeScale });
  const api = await startApiOnThread(
    {
      config,
      adminKey,
      port: options.port ?? 8787,
      host: options.host ?? '127.0.0.1',
      dynamo: emulators.dynamo,
      sqs: emulators.sqs,
      eventsTable: wiring.eventsTable,
      controlTable: wiring.controlTable,
      distributeQueueUrl: wiring.distributeQueueUrl,
      distributeBulkQueueUrl: wiring.distributeBulkQueueUrl,
      deliverQueueUrl: wiring.deliverQueueUrl,
      logLevel: options.logLevel ?? 'WARN',
      ...(options.authorizerCacheMs !== undefined && { authorizerCacheMs: options.authorizerCacheMs }),
    },
    {
      metrics,
      notice: (notice) => void published.webhookDisabled(notice).catch((error: unknown) => log.error('Notice not kept', { error })),
      alarms: () => alarms.evaluate(),
      notices: () => notifier.notices,
      ...(options.onInvocation && { onInvocation: options.onInvocation }),
      ...(options.onCall && { onCall: options.onCall }),
      onFailure,
    },
  );
  const url = `http://${options.host ?? '127.0.0.1'}:${api.port}`;

  // Lambda's event source mappings: invocations up to each function's maximum
  // concurrency (they all share this thread and its CPU). Each poller has a client of
  // its own, so its long polls never queue the sends.
  const mapping = (queue: SandboxQueue, fn: 'distributor' | 'delivery', handler: SqsHandler) =>
    new Poller({
      client: instrument(sqsClient({ ...emulators.sqs, maxSockets: 64 }), 'sqs'),
      queue,
      handler,
      functionName: `sluice-${fn}`,
      logger: log,
      metrics,
      fn,
      ...(options.onInvocation && { onInvocation: options.onInvocation }),
      ...(options.onReceive && { onReceive: options.onReceive }),
    });
  // The distributor's two mappings (the main and the bulk lane) invoke one function.
  const distributorHandler = asFunction('distributor', makeDistributorHandler(distributor(wiring), log, wiring.metrics));
  const pollers = [
    mapping(distributeQueue, 'distributor', distributorHandler),
    mapping(distributeBulkQueue, 'distributor', distributorHandler),
    mapping(deliverQueue, 'delivery', asFunction('delivery', makeDeliveryHandler(deliveryDeps(wiring, published)))),
  ];
  for (const poller of pollers) poller.start();

  // The reconciler's schedule.
  const reconciler = reconcilerDeps(wiring);
  // Scheduled runs under way: stopping lets them end before it stops the emulators, so
  // none of their writes is cut off halfway (dynalite can then wait on it for good).
  const scheduled = new InFlight();
  const reconcilerTimeoutMs = reconcilerTimeoutSeconds(config.reconcileIntervalSeconds) * 1000;
  const runReconciler = () => {
    // The time the run has left, as the function reads it from Lambda's context
    // (functions/reconciler/handler.ts): without it a run read every shard of the index
    // before it rang or reported, and over a large one it outlasted its timeout (an error,
    // reconciler-errors paging, and the next run beside it) where AWS's stops reading at
    // half its time, rings what it read and reports.
    const deadline = Date.now() + reconcilerTimeoutMs;
    return scheduled
      .track(runningAs('reconciler', () => reconcile({ ...reconciler, timeLeftMs: () => deadline - Date.now() })))
      .catch((error: unknown) => {
        metrics.record('function:reconciler:Errors', 1);
        log.error('Reconciler run failed', { error });
        throw error;
      });
  };
  // Each scheduled function runs one at a time (reserved concurrency 1 in AWS): a tick
  // that finds the last run still going is throttled, as Lambda would; and a run ends
  // at its function's timeout, counted as an error, as Lambda ends it.
  const schedule = (fn: 'reconciler' | 'canary', intervalSeconds: number, timeoutSeconds: number, run: () => Promise<unknown>) =>
    everyOneAtATime(
      intervalSeconds * 1000,
      run,
      () => {
        metrics.record(`function:${fn}:Throttles`, 1);
        log.warn('A scheduled run was still under way at the next tick: throttled', { function: fn });
      },
      {
        // The canary runs at start too, so a fresh sandbox has its tenant and webhook at once.
        startNow: fn === 'canary',
        timeoutMs: timeoutSeconds * 1000,
        onTimeout: () => {
          metrics.record(`function:${fn}:Errors`, 1);
          log.error(`A scheduled run timed out after ${timeoutSeconds} seconds`, { function: fn });
        },
      },
    );
  const schedules = [schedule('reconciler', config.reconcileIntervalSeconds, reconcilerTimeoutMs / 1000, runReconciler)];
  const timers: ReturnType<typeof setInterval>[] = [];

  // What CloudWatch would measure on the dead-letter queues, and the queues' age between receives.
  const monitor = setInterval(() => {
    // The alarms judged as CloudWatch judges them, on a clock, not only when someone asks:
    // each state's `since` is then when it began, not the first look at it after.
    alarms.evaluate();
    for (const poller of pollers) poller.recordAge();
    for (const queue of Object.values(queues)) {
      awsItself
        .send(new GetQueueAttributesCommand({ QueueUrl: queue.deadLetterUrl, AttributeNames: ['ApproximateNumberOfMessages'] }))
        .then((r) =>
          metrics.record(
            `queue:${queue.definition.logicalName}:dlq:ApproximateNumberOfMessagesVisible`,
            Number(r.Attributes?.ApproximateNumberOfMessages ?? 0),
          ),
        )
        .catch(() => undefined);
    }
  }, 10_000 * alarmTimeScale);
  timers.push(monitor);

  // The canary's schedule; its receiver is POST /sandbox/canary on this server.
  const canary: CanaryDeps = {
    store: new CanaryStore({ client: dynamo, tableName: wiring.controlTable }),
    // No Secrets Manager here: the key has an item of its own (adapters/canary-key.ts).
    keys: new TableCanaryKey({ client: dynamo, tableName: wiring.controlTable }),
    apiUrl: url,
    adminKey: async () => adminKey,
    receiverUrl: `${url}/sandbox/canary`,
    metrics,
    logger: log,
    now: Date.now,
  };
  const runCanaryOnce = () =>
    scheduled.track(runningAs('canary', () => runCanary(canary))).catch((error: unknown) => {
      if (stopped) return;
      metrics.record('function:canary:Errors', 1);
      log.error('Canary run failed', { error });
    });
  if (options.canary !== false) {
    schedules.push(schedule('canary', config.canaryIntervalSeconds, CANARY_TIMEOUT_SECONDS, runCanaryOnce));
  }

  return {
    url,
    adminKey,
    config,
    metrics,
    notifier,
    wiring,
    emulators,
    queues,
    reconcile: runReconciler,
    runCanary: runCanaryOnce,
    alarms: () => alarms.evaluate(),
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const timer of timers) clearInterval(timer);
      for (const schedule of schedules) schedule.stop();
      await api.stop();
      // With the API closed, a canary run ends at its next call of it.
      await scheduled.settled(10_000);
      // In pipeline order: the distributor's turns send to the deliver queue, whose
      // poller takes them until those turns are done (poller.ts, stop).
      for (const poller of pollers) await poller.stop();
      await emulators.stop();
      releaseDataDir();
    },
  };
}

/** The copy-paste walk-through printed by `npm start` and run by the quick-start test. */
export function walkthrough(url: string, adminKey: string): string {
  return [
    `ADMIN_KEY=${adminKey}`,
    `TENANT_KEY=$(curl -s -X POST ${url}/v1/admin/tenants -H "Authorization: Bearer $ADMIN_KEY" -H 'content-type: application/json' -d '{"name":"acme"}' | sed -E 's/.*"api_key":"([^"]+)".*/\\1/')`,
    `curl -s -X POST ${url}/v1/webhooks -H "Authorization: Bearer $TENANT_KEY" -H 'content-type: application/json' -d '{"resource":"project:7","url":"${url}/sandbox/inbox/demo","types":["task.*"]}'`,
    `curl -s -X POST ${url}/v1/events -H "Authorization: Bearer $TENANT_KEY" -H 'content-type: application/json' -d '{"events":[{"resource":"task:42","parents":["project:7"],"type":"task.changed","data":{"title":"Ship it"}}]}'`,
    'sleep 2',
    `curl -s ${url}/sandbox/inbox/demo`,
  ].join('\n');
}
