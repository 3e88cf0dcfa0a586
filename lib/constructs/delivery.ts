/** The deliver stage: the standard deliver queue (fair queues by tenant) and the delivery function on it. */
import { Duration } from 'aws-cdk-lib';
import type { TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { Alias } from 'aws-cdk-lib/aws-kms';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import type { SluiceConfig } from '../../functions/core/config.ts';
import { ENV, FUNCTION_ENTRIES } from '../../functions/definitions/environment.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import { TABLE_ACCESS } from '../../functions/definitions/tables.ts';
import { QueueWithDeadLetters } from './queues.ts';
import { SluiceFunction } from './sluice-function.ts';

export interface DeliveryProps {
  readonly config: SluiceConfig;
  readonly metricsService: string;
  readonly control: TableV2;
}

export class Delivery extends Construct {
  readonly deliver: QueueWithDeadLetters;
  readonly delivery: SluiceFunction;
  /** Told when a webhook is disabled (410 or quarantine expired); owners subscribe to it. */
  readonly webhookDisabledTopic: Topic;

  constructor(scope: Construct, id: string, props: DeliveryProps) {
    super(scope, id);
    this.deliver = new QueueWithDeadLetters(this, 'Deliver', DELIVER_QUEUE);
    this.webhookDisabledTopic = new Topic(this, 'WebhookDisabled', {
      displayName: 'sluice: webhook disabled',
      enforceSSL: true,
      masterKey: Alias.fromAliasName(this, 'SnsKey', 'alias/aws/sns'),
    });
    this.delivery = new SluiceFunction(this, 'Delivery', {
      entry: FUNCTION_ENTRIES.delivery,
      config: props.config,
      metricsService: props.metricsService,
      timeout: Duration.seconds(DELIVER_QUEUE.consumerTimeoutSeconds),
      // Retries, probes, releases and long waits go round the deliver queue, a hop each.
      sendsToItsOwnQueue: true,
    })
      .bindTable(props.control, TABLE_ACCESS.delivery.control, ENV.controlTable)
      .bindQueue(this.deliver.queue, ENV.deliverQueueUrl)
      .bindTopic(this.webhookDisabledTopic, ENV.webhookDisabledTopicArn);
    this.delivery.function.addEventSource(
      new SqsEventSource(this.deliver.queue, {
        batchSize: DELIVER_QUEUE.batchSize,
        reportBatchItemFailures: true,
        maxConcurrency: DELIVER_QUEUE.maxConcurrency,
      }),
    );
  }
}
