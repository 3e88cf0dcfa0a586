/**
 * The distribute stage: the FIFO doorbell queue (one message group per object),
 * the distributor on it with partial batch responses and a concurrency cap, and
 * the reconciler on a schedule.
 */
import { Duration } from 'aws-cdk-lib';
import type { TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { SluiceConfig } from '../../functions/core/config.ts';
import { ENV, FUNCTION_ENTRIES, reconcilerTimeoutSeconds, scheduleSeconds } from '../../functions/definitions/environment.ts';
import { DISTRIBUTE_BULK_QUEUE, DISTRIBUTE_QUEUE } from '../../functions/definitions/queues.ts';
import { TABLE_ACCESS } from '../../functions/definitions/tables.ts';
import { QueueWithDeadLetters } from './queues.ts';
import { SluiceFunction } from './sluice-function.ts';

export interface PipelineProps {
  readonly config: SluiceConfig;
  readonly metricsService: string;
  readonly events: TableV2;
  readonly control: TableV2;
  readonly deliverQueue: IQueue;
}

export class Pipeline extends Construct {
  readonly distribute: QueueWithDeadLetters;
  /** The doorbells' bulk lane (functions/core/lanes.ts): the same function drains it with its own concurrency. */
  readonly distributeBulk: QueueWithDeadLetters;
  readonly distributor: SluiceFunction;
  readonly reconciler: SluiceFunction;

  constructor(scope: Construct, id: string, props: PipelineProps) {
    super(scope, id);
    this.distribute = new QueueWithDeadLetters(this, 'Distribute', DISTRIBUTE_QUEUE);
    this.distributeBulk = new QueueWithDeadLetters(this, 'DistributeBulk', DISTRIBUTE_BULK_QUEUE);

    this.distributor = new SluiceFunction(this, 'Distributor', {
      entry: FUNCTION_ENTRIES.distributor,
      config: props.config,
      metricsService: props.metricsService,
      timeout: Duration.seconds(DISTRIBUTE_QUEUE.consumerTimeoutSeconds),
      // A turn that leaves events behind rings its object again, in the lane it came from.
      sendsToItsOwnQueue: true,
    })
      .bindTable(props.events, TABLE_ACCESS.distributor.events, ENV.eventsTable)
      // Not the webhooks' signing secrets: only what it names in its reads.
      .bindAttributes(props.control, ENV.controlTable, TABLE_ACCESS.distributor.control)
      .bindQueue(this.distribute.queue, ENV.distributeQueueUrl)
      .bindQueue(this.distributeBulk.queue, ENV.distributeBulkQueueUrl)
      .bindQueue(props.deliverQueue, ENV.deliverQueueUrl);
    // One mapping per lane, each with its own maximum concurrency: a flood in the bulk
    // lane takes none of the main lane's invocations.
    for (const [lane, definition] of [
      [this.distribute, DISTRIBUTE_QUEUE],
      [this.distributeBulk, DISTRIBUTE_BULK_QUEUE],
    ] as const) {
      this.distributor.function.addEventSource(
        new SqsEventSource(lane.queue, {
          batchSize: definition.batchSize,
          reportBatchItemFailures: true,
          maxConcurrency: definition.maxConcurrency,
        }),
      );
    }

    this.reconciler = new SluiceFunction(this, 'Reconciler', {
      entry: FUNCTION_ENTRIES.reconciler,
      config: props.config,
      metricsService: props.metricsService,
      timeout: Duration.seconds(reconcilerTimeoutSeconds(props.config.reconcileIntervalSeconds)),
      reservedConcurrentExecutions: 1,
    })
      .bindTable(props.events, TABLE_ACCESS.reconciler.events, ENV.eventsTable)
      // The kill switches and the keys `by_chain` lists, nothing else of the control table.
      .bindTable(props.control, TABLE_ACCESS.reconciler.control, ENV.controlTable)
      .bindQueue(this.distribute.queue, ENV.distributeQueueUrl)
      .bindQueue(this.distributeBulk.queue, ENV.distributeBulkQueueUrl)
      // A check of each webhook `by_chain` lists, which the delivery function makes.
      .bindQueue(props.deliverQueue, ENV.deliverQueueUrl);
    // A failed sweep is tried by the next one, on the schedule: Lambda's own retries of an
    // asynchronous invocation would run it again beside the schedule's, and with a
    // concurrency of 1 be throttled, which pages. A run throttled behind one still going
    // is not a failure to Lambda, which keeps such an event and tries it again for up to
    // its maximum age (6 hours unless set), each try throttled while the runs overlap, then
    // a run of an old schedule: kept a minute at most, the shortest Lambda allows.
    // https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html
    this.reconciler.function.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.seconds(60) });
    new Rule(this, 'ReconcileSchedule', {
      description: 'Runs the sluice reconciler',
      schedule: Schedule.rate(Duration.seconds(scheduleSeconds(props.config.reconcileIntervalSeconds))),
      targets: [new LambdaFunction(this.reconciler.function)],
    });
  }
}
