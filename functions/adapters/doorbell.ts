/**
 * The doorbell: a message in a FIFO "distribute" queue, one group per object, in the
 * main lane or, for a tenant ringing many objects at once, the bulk lane (core/lanes.ts).
 */
import type { SQSClient } from '@aws-sdk/client-sqs';
import { objectGroupId } from '../core/keys.ts';
import type { DoorbellLanes, Lane } from '../core/lanes.ts';
import type { ObjectKey } from '../core/model.ts';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';
import type { QuietSnapshot } from './queue-store.ts';
import { SendBatcher, sqsMessageBody } from './send-batcher.ts';

export interface DoorbellMessage {
  readonly tenant: string;
  readonly resource: string;
  /** Rung when a kill switch was lifted: read the switches afresh, not from the cache. */
  readonly fresh?: boolean;
  /** Rung by an ingest that kept its event on the idle object's meta item: a quiet turn may do. */
  readonly quiet?: boolean;
  /** The meta item and the event as that ingest's write found and left them: the quiet turn reads nothing. */
  readonly snapshot?: QuietSnapshot;
  /** Rung in the bulk lane: a turn that rings again rings there too. */
  readonly bulk?: boolean;
}

function isSnapshot(value: unknown): value is QuietSnapshot {
  const v = value as Partial<QuietSnapshot> | undefined;
  return (
    typeof v === 'object' &&
    v !== null &&
    Number.isInteger(v.cursor) &&
    Number.isInteger(v.seq) &&
    typeof v.stored === 'object' &&
    v.stored !== null
  );
}

export function parseDoorbell(body: string): ObjectKey & { fresh: boolean; quiet: boolean; lane: Lane; snapshot?: QuietSnapshot } {
  const message = JSON.parse(body) as Partial<DoorbellMessage>;
  if (typeof message.tenant !== 'string' || typeof message.resource !== 'string') {
    throw new Error('A doorbell names a tenant and a resource');
  }
  const quiet = message.quiet === true;
  return {
    tenantId: message.tenant,
    resource: message.resource,
    fresh: message.fresh === true,
    quiet,
    lane: message.bulk === true ? 'bulk' : 'main',
    ...(quiet && isSnapshot(message.snapshot) && { snapshot: message.snapshot }),
  };
}

/** The bulk lane: its queue, the container's counts that send a tenant there, and what tells on-call. */
export interface BulkLane {
  readonly queueUrl: string;
  readonly lanes: DoorbellLanes;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
}

/**
 * Rings go through a SendBatcher per lane: the objects one ingest request flips, or one
 * distributor invocation re-rings, share SendMessageBatch requests.
 */
export class Doorbell {
  readonly #main: SendBatcher;
  readonly #bulk: (BulkLane & { readonly batcher: SendBatcher }) | undefined;

  /** Without a bulk lane, every ring goes to `queueUrl`. */
  constructor(options: { client: SQSClient; queueUrl: string; bulk?: BulkLane; lingerMs?: number }) {
    const { bulk, ...main } = options;
    this.#main = new SendBatcher(main);
    this.#bulk = bulk && { ...bulk, batcher: new SendBatcher({ ...main, queueUrl: bulk.queueUrl }) };
  }

  /**
   * Rings for an object, in `options.lane` when given (a turn ringing again keeps its
   * doorbell's lane), otherwise in the lane its tenant's rings in this container call for.
   * `token` makes the deduplication id: two rings with the same token within five minutes
   * are one message (a retried send cannot double-ring).
   */
  async ring(
    key: ObjectKey,
    token: string,
    options: { fresh?: boolean; quiet?: boolean; snapshot?: QuietSnapshot; lane?: Lane } = {},
  ): Promise<void> {
    const bulk = this.#bulk;
    let lane: Lane = 'main';
    if (bulk) {
      const chosen = options.lane ? { lane: options.lane, entered: false } : bulk.lanes.laneFor(key.tenantId);
      lane = chosen.lane;
      if (chosen.entered) {
        // Once each time the tenant enters in this container (core/lanes.ts keeps it there
        // until BULK_HOLD_MS pass without a busy second): who is filling the bulk lane.
        bulk.logger.warn("A tenant's doorbells go to the bulk lane: it rang more objects in one second than the main lane takes", {
          tenant: key.tenantId,
        });
      }
      if (lane === 'bulk') bulk.metrics.count('BulkLaneDoorbells');
    }
    const group = objectGroupId(key);
    const body: DoorbellMessage = {
      tenant: key.tenantId,
      resource: key.resource,
      ...(options.fresh && { fresh: true }),
      ...(options.quiet && { quiet: true }),
      ...(options.quiet && options.snapshot && { snapshot: options.snapshot }),
      ...(lane === 'bulk' && { bulk: true }),
    };
    await (bulk && lane === 'bulk' ? bulk.batcher : this.#main).send([
      {
        MessageBody: sqsMessageBody(body),
        MessageGroupId: group,
        MessageDeduplicationId: `${group.slice(0, 64)}:${token}`.slice(0, 128),
      },
    ]);
  }
}
