/** SQS queues with their dead-letter queues, from the shared queue definitions. */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { DeduplicationScope, FifoThroughputLimit, Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { type QueueDefinition, SQS_MAX_MESSAGE_BYTES } from '../../functions/definitions/queues.ts';

export class QueueWithDeadLetters extends Construct {
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;

  constructor(scope: Construct, id: string, definition: QueueDefinition) {
    super(scope, id);
    const common = {
      fifo: definition.fifo ? true : undefined,
      enforceSSL: true,
      encryption: QueueEncryption.SQS_MANAGED,
      retentionPeriod: Duration.seconds(definition.retentionSeconds),
      maxMessageSizeBytes: SQS_MAX_MESSAGE_BYTES,
      // Queues hold only messages in flight; the tables hold the data.
      removalPolicy: RemovalPolicy.DESTROY,
    };
    this.deadLetterQueue = new Queue(this, 'DeadLetters', common);
    this.queue = new Queue(this, 'Queue', {
      ...common,
      // High-throughput FIFO: throughput per message group (one per object) rather than
      // 300 calls a second for the whole queue. Each deduplication id is its group's
      // (first 64 characters) and a token of its own: deduplicating within a group is
      // what deduplicating in the queue already was.
      ...(definition.fifo && {
        contentBasedDeduplication: false,
        deduplicationScope: DeduplicationScope.MESSAGE_GROUP,
        fifoThroughputLimit: FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      }),
      visibilityTimeout: Duration.seconds(definition.visibilityTimeoutSeconds),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: definition.maxReceiveCount },
    });
  }
}
