/**
 * Queue definitions, read by the CDK stack and by the sandbox (which also drives
 * its pollers with the batch settings, as Lambda's event source mappings would).
 */

export interface QueueDefinition {
  readonly logicalName: string;
  readonly fifo: boolean;
  /**
   * Six times the consuming function's timeout (AWS's advice for SQS event sources):
   * a live invocation keeps its message, and so does one Lambda is still retrying
   * after a throttle, instead of its message being received again (and, after
   * maxReceiveCount receives, dead-lettered).
   */
  readonly visibilityTimeoutSeconds: number;
  /** Receives after which a message moves to the dead-letter queue. */
  readonly maxReceiveCount: number;
  readonly retentionSeconds: number;
  /** Event source mapping: records per invocation. */
  readonly batchSize: number;
  /** Event source mapping: most concurrent invocations. */
  readonly maxConcurrency: number;
  /** Timeout of the function consuming the queue. */
  readonly consumerTimeoutSeconds: number;
}

const FOURTEEN_DAYS = 14 * 24 * 3600;

/**
 * SQS's largest message (1 MiB), set on every queue rather than left to the default,
 * which queues made before SQS raised it kept at 256 KiB. A delivery holds at most
 * 256 KiB of events; its message body, written in ASCII (send-batcher.ts
 * `sqsMessageBody`), can be up to three times that.
 */
export const SQS_MAX_MESSAGE_BYTES = 1_048_576;

/**
 * The doorbells: one message group per object, so one distributor at a time per
 * object in this queue (the bulk lane's is another: the lease admits one turn of the
 * two). Ingest rings only on idle → scheduled, so a group holds one or two messages.
 */
export const DISTRIBUTE_QUEUE: QueueDefinition = {
  logicalName: 'Distribute',
  fifo: true,
  visibilityTimeoutSeconds: 120,
  maxReceiveCount: 10,
  retentionSeconds: FOURTEEN_DAYS,
  batchSize: 10,
  maxConcurrency: 20,
  consumerTimeoutSeconds: 20,
};

/**
 * The doorbells of a tenant ringing more objects a second than one container lets
 * into the main lane (core/lanes.ts): the same queue, with distributors of its own,
 * so that its backlog is never in front of other tenants' doorbells.
 */
export const DISTRIBUTE_BULK_QUEUE: QueueDefinition = {
  ...DISTRIBUTE_QUEUE,
  logicalName: 'DistributeBulk',
};

/** Deliveries ready to send; standard queue, MessageGroupId = tenant (fair queues). */
export const DELIVER_QUEUE: QueueDefinition = {
  logicalName: 'Deliver',
  fifo: false,
  visibilityTimeoutSeconds: 180,
  maxReceiveCount: 8,
  retentionSeconds: FOURTEEN_DAYS,
  batchSize: 10,
  maxConcurrency: 50,
  consumerTimeoutSeconds: 30,
};

export const QUEUES = [DISTRIBUTE_QUEUE, DISTRIBUTE_BULK_QUEUE, DELIVER_QUEUE] as const;

/**
 * What SQS does with a record of `queue` that fails at its `receiveCount`th receive: gives
 * it back after the visibility timeout, or, at maxReceiveCount, moves it to the queue's
 * dead-letter queue, where nothing reads it until on-call redrives it.
 */
export function afterFailedReceive(queue: QueueDefinition, receiveCount: number): 'again' | 'dead_letter_queue' {
  return receiveCount >= queue.maxReceiveCount ? 'dead_letter_queue' : 'again';
}
