/**
 * Wires the services from clients and settings. Lambda handlers and the sandbox
 * both build their services here, so they run the same code with the same
 * dependencies; only clients, telemetry and the usage-plan backend differ.
 */
import { randomUUID } from 'node:crypto';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DeadLetters } from '../adapters/dead-letters.ts';
import { DeliveryLog } from '../adapters/delivery-log.ts';
import { DeliveryQueue } from '../adapters/delivery-queue.ts';
import { Doorbell } from '../adapters/doorbell.ts';
import { GapCounts } from '../adapters/gap-counts.ts';
import { HeldDeliveries } from '../adapters/held-deliveries.ts';
import { IdempotencyStore } from '../adapters/idempotency-store.ts';
import { PaceStore } from '../adapters/pace-store.ts';
import { QueueStore } from '../adapters/queue-store.ts';
import { SendBudgets } from '../adapters/send-budgets.ts';
import { StreamStore } from '../adapters/stream-store.ts';
import { SubscriptionCache } from '../adapters/subscription-cache.ts';
import { CachedSwitches, SwitchStore } from '../adapters/switch-store.ts';
import { TenantStore } from '../adapters/tenant-store.ts';
import type { UsagePlans } from '../adapters/usage-plans.ts';
import { makeSender, type Sender } from '../adapters/webhook-sender.ts';
import { WatchedWebhooks, WebhookStore } from '../adapters/webhook-store.ts';
import type { ApiServices } from '../api/app.ts';
import type { SluiceConfig } from '../core/config.ts';
import { newId } from '../core/ids.ts';
import { DoorbellLanes } from '../core/lanes.ts';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';
import type { DeliveryDeps, Notifier } from './delivery/deps.ts';
import { Distributor } from './distributor.ts';
import type { ReconcilerDeps } from './reconciler.ts';
import { WebhookService } from './webhooks.ts';

export interface Wiring {
  readonly config: SluiceConfig;
  readonly dynamo: DynamoDBDocumentClient;
  readonly sqs: SQSClient;
  readonly eventsTable: string;
  readonly controlTable: string;
  readonly distributeQueueUrl: string;
  /** The doorbells' bulk lane (core/lanes.ts). */
  readonly distributeBulkQueueUrl: string;
  readonly deliverQueueUrl: string;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now?: () => number;
  readonly send?: Sender;
}

/** The doorbell, with the lanes this container keeps for its rings (core/lanes.ts). */
function doorbell(
  w: Pick<Wiring, 'sqs' | 'distributeQueueUrl' | 'distributeBulkQueueUrl' | 'config' | 'metrics' | 'logger' | 'now'>,
): Doorbell {
  return new Doorbell({
    client: w.sqs,
    queueUrl: w.distributeQueueUrl,
    bulk: {
      queueUrl: w.distributeBulkQueueUrl,
      lanes: new DoorbellLanes({ ringsPerSecond: w.config.bulkLaneAfterRingsPerSecond, now: w.now ?? Date.now }),
      metrics: w.metrics,
      logger: w.logger,
    },
  });
}

function switchReader(w: Pick<Wiring, 'dynamo' | 'controlTable' | 'config' | 'now'>): CachedSwitches {
  return new CachedSwitches(new SwitchStore({ client: w.dynamo, tableName: w.controlTable }), w.config.switchCacheMs, w.now ?? Date.now);
}

function streamStore(w: Pick<Wiring, 'dynamo' | 'controlTable' | 'eventsTable' | 'config'>): StreamStore {
  return new StreamStore({
    client: w.dynamo,
    controlTable: w.controlTable,
    eventsTable: w.eventsTable,
    retentionDays: w.config.retentionDays,
  });
}

function stores(w: Wiring) {
  return {
    queues: new QueueStore({ client: w.dynamo, tableName: w.eventsTable, retentionDays: w.config.retentionDays }),
    idempotency: new IdempotencyStore({
      client: w.dynamo,
      tableName: w.eventsTable,
      retentionDays: w.config.retentionDays,
      ingestGraceMs: w.config.ingestGraceMs,
    }),
    webhooks: new WebhookStore({ client: w.dynamo, tableName: w.controlTable }),
    tenants: new TenantStore({ client: w.dynamo, tableName: w.controlTable }),
  };
}

/**
 * The API's notifier. The webhook-disabled notice goes out when sluice disables a webhook
 * for its endpoint's failures, which only the delivery function does; the API's health
 * changes (an owner's enable, disable or test) owe none. So the API function is not granted
 * `sns:Publish`, and should a notice ever fall to it, this fails as a failed publish does:
 * counted, logged, and owed still, for the delivery function to send.
 */
export const API_SENDS_NO_NOTICES: Notifier = {
  async webhookDisabled() {
    throw new Error('The API function sends no webhook-disabled notices; the delivery function does');
  },
};

export function apiServices(w: Wiring, usagePlans: UsagePlans, notifier: Notifier): ApiServices {
  const now = w.now ?? Date.now;
  const { queues, idempotency, webhooks, tenants } = stores(w);
  const delivery = deliveryDeps(w, notifier);
  const bell = doorbell(w);
  const switches = new SwitchStore({ client: w.dynamo, tableName: w.controlTable });
  return {
    streams: { streams: streamStore(w), retentionDays: w.config.retentionDays, now },
    switches: {
      switches,
      queues,
      doorbell: bell,
      webhooks,
      tenants,
      delivery,
      now,
      logger: w.logger,
    },
    config: w.config,
    logger: w.logger,
    ingest: {
      queues,
      idempotency,
      doorbell: bell,
      config: w.config,
      metrics: w.metrics,
      logger: w.logger,
      now,
      newEventId: () => newId('evt', now()),
    },
    webhooks: new WebhookService({
      webhooks,
      tenants,
      send: w.send ?? makeSender({ allowPrivateTargets: w.config.allowPrivateTargets }),
      timeoutMs: w.config.deliveryTimeoutMs,
      now,
      delivery,
      switches,
    }),
    tenants: { tenants, usagePlans, now, logger: w.logger },
    queues: { queues, now },
  };
}

export function distributor(w: Wiring): Distributor {
  const { queues, webhooks } = stores(w);
  const streams = streamStore(w);
  return new Distributor({
    queues,
    switches: switchReader(w),
    streams,
    subscriptions: webhooks,
    lookupCache: new SubscriptionCache({
      client: w.dynamo,
      controlTable: w.controlTable,
      lookups: { onResource: (t, r) => webhooks.onResource(t, r), streamExpiry: (t, r) => streams.streamExpiry(t, r) },
    }),
    deliveries: new DeliveryQueue({ client: w.sqs, queueUrl: w.deliverQueueUrl }),
    doorbell: doorbell(w),
    config: w.config,
    metrics: w.metrics,
    logger: w.logger,
    now: w.now ?? Date.now,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  });
}

/**
 * The delivery stage's stores of what it keeps per webhook in the control table
 * (adapters/webhook-items.ts). Built once a container, as each groups the asks of one
 * invocation (and keeps what it last read) in maps of its own.
 */
export function deliveryStores(options: { client: DynamoDBDocumentClient; tableName: string; retentionDays: number }) {
  return {
    deliveryLog: new DeliveryLog(options),
    held: new HeldDeliveries(options),
    gaps: new GapCounts(options),
    deadLetters: new DeadLetters(options),
    sendBudgets: new SendBudgets(options),
    paces: new PaceStore(options),
  };
}

export function deliveryDeps(
  w: Pick<Wiring, 'config' | 'dynamo' | 'sqs' | 'controlTable' | 'deliverQueueUrl' | 'metrics' | 'logger' | 'now' | 'send'>,
  notifier: Notifier,
): DeliveryDeps {
  return {
    webhooks: new WebhookStore({ client: w.dynamo, tableName: w.controlTable }),
    ...deliveryStores({ client: w.dynamo, tableName: w.controlTable, retentionDays: w.config.retentionDays }),
    queue: new DeliveryQueue({ client: w.sqs, queueUrl: w.deliverQueueUrl }),
    notifier,
    switches: switchReader(w),
    send: w.send ?? makeSender({ allowPrivateTargets: w.config.allowPrivateTargets }),
    config: w.config,
    metrics: w.metrics,
    logger: w.logger,
    now: w.now ?? Date.now,
  };
}

export function newLeaseOwner(): string {
  return randomUUID();
}

export function reconcilerDeps(
  w: Pick<
    Wiring,
    | 'config'
    | 'dynamo'
    | 'sqs'
    | 'eventsTable'
    | 'controlTable'
    | 'distributeQueueUrl'
    | 'distributeBulkQueueUrl'
    | 'deliverQueueUrl'
    | 'metrics'
    | 'logger'
    | 'now'
  >,
): ReconcilerDeps {
  return {
    queues: new QueueStore({ client: w.dynamo, tableName: w.eventsTable, retentionDays: w.config.retentionDays }),
    doorbell: doorbell(w),
    switches: new SwitchStore({ client: w.dynamo, tableName: w.controlTable }),
    chains: {
      watched: new WatchedWebhooks({ client: w.dynamo, tableName: w.controlTable }),
      checks: new DeliveryQueue({ client: w.sqs, queueUrl: w.deliverQueueUrl }),
    },
    config: w.config,
    metrics: w.metrics,
    logger: w.logger,
    now: w.now ?? Date.now,
  };
}
