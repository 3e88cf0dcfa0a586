/** The doorbell: a message in the FIFO "distribute" queue, one group per object. */
import type { SQSClient } from '@aws-sdk/client-sqs';
import { objectGroupId } from '../core/keys.ts';
import type { ObjectKey } from '../core/model.ts';
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

export function parseDoorbell(body: string): ObjectKey & { fresh: boolean; quiet: boolean; snapshot?: QuietSnapshot } {
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
    ...(quiet && isSnapshot(message.snapshot) && { snapshot: message.snapshot }),
  };
}

/**
 * Rings go through a SendBatcher: the objects one ingest request flips, or one
 * distributor invocation re-rings, share SendMessageBatch requests.
 */
export class Doorbell {
  readonly #batcher: SendBatcher;

  constructor(options: { client: SQSClient; queueUrl: string; lingerMs?: number }) {
    this.#batcher = new SendBatcher(options);
  }

  /**
   * Rings for an object. `token` makes the deduplication id: two rings with the same
   * token within five minutes are one message (a retried send cannot double-ring).
   */
  async ring(key: ObjectKey, token: string, options: { fresh?: boolean; quiet?: boolean; snapshot?: QuietSnapshot } = {}): Promise<void> {
    const group = objectGroupId(key);
    const body: DoorbellMessage = {
      tenant: key.tenantId,
      resource: key.resource,
      ...(options.fresh && { fresh: true }),
      ...(options.quiet && { quiet: true }),
      ...(options.quiet && options.snapshot && { snapshot: options.snapshot }),
    };
    await this.#batcher.send([
      {
        MessageBody: sqsMessageBody(body),
        MessageGroupId: group,
        MessageDeduplicationId: `${group.slice(0, 64)}:${token}`.slice(0, 128),
      },
    ]);
  }
}
