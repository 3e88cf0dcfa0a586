/**
 * What pages on-call and what they look at (SPEC §5): the on-call SNS topic, one
 * CloudWatch alarm per definition in functions/definitions/alarms.ts, the canary
 * (a scheduled sender and a receiver behind a function URL), and one dashboard
 * showing the pipeline left to right.
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type { RestApi } from 'aws-cdk-lib/aws-apigateway';
import {
  Alarm,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IMetric,
  MathExpression,
  Metric,
  TextWidget,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { PolicyStatement, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';
import { FunctionUrlAuthType } from 'aws-cdk-lib/aws-lambda';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import { type ISecret, Secret } from 'aws-cdk-lib/aws-secretsmanager';
import { Topic } from 'aws-cdk-lib/aws-sns';
import type { Queue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { SluiceConfig } from '../../functions/core/config.ts';
import {
  type AlarmDefinition,
  API_SERVER_ERRORS_METRIC,
  alarmDefinitions,
  alarmDescription,
  type FunctionName,
  METRICS_NAMESPACE,
  type MetricSource,
  REQUESTS_TOO_LARGE_METRIC,
  THROTTLED_REQUESTS_METRIC,
} from '../../functions/definitions/alarms.ts';
import { CANARY_TIMEOUT_SECONDS, ENV, FUNCTION_ENTRIES, scheduleSeconds } from '../../functions/definitions/environment.ts';
import { TABLE_ACCESS } from '../../functions/definitions/tables.ts';
import { acknowledgeNag } from './nag.ts';
import { SluiceFunction } from './sluice-function.ts';

const TREAT_MISSING_DATA: { readonly [K in AlarmDefinition['missingData']]: TreatMissingData } = {
  notBreaching: TreatMissingData.NOT_BREACHING,
  breaching: TreatMissingData.BREACHING,
  ignore: TreatMissingData.IGNORE,
};

/** Most canary receivers running at once (its URL is public; see the receiver below). */
export const CANARY_RECEIVER_CONCURRENCY = 2;

export interface OperationsProps {
  readonly config: SluiceConfig;
  /** The `service` dimension of this deployment's metrics, which its alarms and dashboard watch. */
  readonly metricsService: string;
  readonly api: RestApi;
  readonly control: TableV2;
  readonly adminKeySecret: ISecret;
  readonly queues: {
    readonly Distribute: { readonly queue: Queue; readonly deadLetterQueue: Queue };
    readonly DistributeBulk: { readonly queue: Queue; readonly deadLetterQueue: Queue };
    readonly Deliver: { readonly queue: Queue; readonly deadLetterQueue: Queue };
  };
  /** Every function but the canary's own two. */
  readonly functions: Omit<Record<FunctionName, NodejsFunction>, 'canary' | 'canaryReceiver'>;
}

export class Operations extends Construct {
  /** Every alarm notifies it, pages and tickets (see AlarmSeverity). */
  readonly onCallTopic: Topic;
  readonly alarms: Record<string, Alarm>;
  readonly dashboard: Dashboard;
  readonly canary: SluiceFunction;
  /** The canary tenant's API key (functions/adapters/canary-key.ts). */
  readonly canaryKeySecret: Secret;
  readonly canaryReceiver: SluiceFunction;

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    // CloudWatch publishes the alarms to this topic, and it cannot use the AWS-managed
    // SNS key (whose policy nobody can change): the topic has a key of its own that lets
    // CloudWatch's alarms of this account and region encrypt, and nothing else new.
    const stack = Stack.of(this);
    const fromOwnAlarms = {
      StringEquals: { 'aws:SourceAccount': stack.account },
      ArnLike: { 'aws:SourceArn': `arn:${stack.partition}:cloudwatch:${stack.region}:${stack.account}:alarm:*` },
    };
    const onCallKey = new Key(this, 'OnCallKey', {
      description: 'sluice: encrypts the on-call topic, which CloudWatch alarms publish to',
      enableKeyRotation: true,
      // It encrypts only notifications in flight: nothing kept needs it once the stack is gone.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    onCallKey.addToResourcePolicy(
      new PolicyStatement({
        principals: [new ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
        conditions: fromOwnAlarms,
      }),
    );
    this.onCallTopic = new Topic(this, 'OnCall', { displayName: 'sluice on-call', enforceSSL: true, masterKey: onCallKey });
    // The TLS-only policy replaces the topic's default one, which let the account's services publish.
    this.onCallTopic.addToResourcePolicy(
      new PolicyStatement({
        principals: [new ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.onCallTopic.topicArn],
        conditions: fromOwnAlarms,
      }),
    );

    // The canary: a receiver behind a function URL (the canary webhook's https endpoint,
    // verifying every signature), and a sender that publishes through the public API.
    this.canaryReceiver = new SluiceFunction(this, 'CanaryReceiver', {
      entry: FUNCTION_ENTRIES.canaryReceiver,
      config: props.config,
      metricsService: props.metricsService,
      timeout: Duration.seconds(10),
      // Public (a function URL), so anyone may call it: a cap keeps a flood of calls from
      // taking the account's concurrency from the pipeline's functions. The canary sends it
      // two ticks a minute, in one delivery or two.
      reservedConcurrentExecutions: CANARY_RECEIVER_CONCURRENCY,
      // It may read the canary's own item and update the one where it notes arrived ticks,
      // nothing else.
    }).bindTable(props.control, TABLE_ACCESS.canaryReceiver.control, ENV.controlTable);
    const receiverUrl = this.canaryReceiver.function.addFunctionUrl({ authType: FunctionUrlAuthType.NONE });
    this.canary = new SluiceFunction(this, 'Canary', {
      entry: FUNCTION_ENTRIES.canary,
      config: props.config,
      metricsService: props.metricsService,
      timeout: Duration.seconds(CANARY_TIMEOUT_SECONDS),
      reservedConcurrentExecutions: 1,
    })
      .bindItems(props.control, ENV.controlTable, TABLE_ACCESS.canary.control)
      .bindSecret(props.adminKeySecret, ENV.adminKeySecretArn);
    // The canary tenant's API key: the canary writes it once it has made its tenant, and
    // only the canary may read it (not the public receiver, which reads the canary's item).
    this.canaryKeySecret = new Secret(this, 'CanaryKey', {
      description: "sluice canary: its internal tenant's API key, written by the canary on its first run",
    });
    acknowledgeNag(
      this.canaryKeySecret,
      'AwsSolutions-SMG4',
      "The value is a sluice tenant API key that the canary itself creates and writes; Secrets Manager's rotation cannot make one.",
    );
    this.canary.bindSecret(this.canaryKeySecret, ENV.canaryKeySecretArn, { write: true });
    this.canary.function.addEnvironment(ENV.apiUrl, props.api.url);
    this.canary.function.addEnvironment(ENV.canaryReceiverUrl, receiverUrl.url);
    // A failed run is tried by the next one (see the reconciler's in pipeline.ts): no Lambda
    // retries, and a run throttled behind the one still going kept a minute at most.
    this.canary.function.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.seconds(60) });
    new Rule(this, 'CanarySchedule', {
      description: 'Publishes the sluice canary event',
      schedule: Schedule.rate(Duration.seconds(scheduleSeconds(props.config.canaryIntervalSeconds))),
      targets: [new LambdaFunction(this.canary.function)],
    });

    const functions: Record<FunctionName, NodejsFunction> = {
      ...props.functions,
      canary: this.canary.function,
      canaryReceiver: this.canaryReceiver.function,
    };
    const metricOf = (source: MetricSource, alarm: AlarmDefinition): IMetric => {
      const options = { period: Duration.seconds(alarm.periodSeconds), statistic: alarm.statistic };
      switch (source.kind) {
        case 'sluice':
          return new Metric({
            namespace: METRICS_NAMESPACE,
            metricName: source.name,
            dimensionsMap: { service: props.metricsService, ...source.dimensions },
            ...options,
          });
        case 'queue': {
          const pair = props.queues[source.queue];
          return (source.deadLetters ? pair.deadLetterQueue : pair.queue).metric(source.name, options);
        }
        case 'function':
          return source.name === 'Errors' ? functions[source.fn].metricErrors(options) : functions[source.fn].metricThrottles(options);
      }
    };

    this.alarms = {};
    for (const definition of alarmDefinitions(props.config)) {
      const metrics = definition.sources.map((source) => metricOf(source, definition));
      const metric =
        metrics.length === 1
          ? (metrics[0] as IMetric)
          : new MathExpression({
              expression: metrics.map((_, i) => `FILL(m${i}, 0)`).join(' + '),
              usingMetrics: Object.fromEntries(metrics.map((m, i) => [`m${i}`, m])),
              period: Duration.seconds(definition.periodSeconds),
              label: definition.title,
            });
      const alarm = new Alarm(this, `Alarm-${definition.name}`, {
        metric,
        threshold: definition.threshold,
        evaluationPeriods: definition.evaluationPeriods,
        datapointsToAlarm: definition.datapointsToAlarm,
        comparisonOperator:
          definition.comparison === 'GreaterThanThreshold'
            ? ComparisonOperator.GREATER_THAN_THRESHOLD
            : ComparisonOperator.LESS_THAN_THRESHOLD,
        treatMissingData: TREAT_MISSING_DATA[definition.missingData],
        alarmDescription: alarmDescription(definition),
      });
      // Pages and tickets alike (SPEC §5): the description's first word tells them apart.
      alarm.addAlarmAction(new SnsAction(this.onCallTopic));
      alarm.addOkAction(new SnsAction(this.onCallTopic));
      this.alarms[definition.name] = alarm;
    }

    const sluice = (name: string, statistic = 'Sum', dimensions: Record<string, string> = {}) =>
      new Metric({
        namespace: METRICS_NAMESPACE,
        metricName: name,
        dimensionsMap: { service: props.metricsService, ...dimensions },
        statistic,
        period: Duration.minutes(1),
        ...(Object.keys(dimensions).length > 0 && { label: `${name} ${Object.values(dimensions).join(' ')}` }),
      });
    // One period for every metric of a graph: AWS's own (API Gateway, SQS) default to
    // 5 minutes, and drawn beside sluice's per-minute counts they would read five times
    // as large, and a short burst spread over five minutes.
    const graph = (title: string, left: IMetric[]) => new GraphWidget({ title, left, width: 4, height: 6, period: Duration.minutes(1) });
    this.dashboard = new Dashboard(this, 'Dashboard', {
      widgets: [
        [
          new TextWidget({
            markdown: '## sluice: ingest → per-object queues → distribute → deliver → health → dead letters → canary',
            width: 24,
            height: 1,
          }),
        ],
        [
          graph('Ingest', [
            props.api.metricCount(),
            sluice('EventsAccepted'),
            sluice('EventsRejected'),
            sluice(THROTTLED_REQUESTS_METRIC),
            sluice(REQUESTS_TOO_LARGE_METRIC),
            sluice('EventsDropped'),
            sluice(API_SERVER_ERRORS_METRIC),
            // API Gateway's own count: ApiServerErrors and the too-large requests.
            props.api.metricServerError(),
          ]),
          graph('Per-object queues', [
            sluice('MaxObjectDepth', 'Maximum'),
            sluice('ObjectsNearCap', 'Maximum'),
            sluice('ScheduledObjects', 'Maximum'),
          ]),
          graph('Distribute', [
            props.queues.Distribute.queue.metricApproximateAgeOfOldestMessage(),
            props.queues.DistributeBulk.queue.metricApproximateAgeOfOldestMessage({ label: 'Bulk lane: age of the oldest doorbell' }),
            sluice('BulkLaneDoorbells'),
            sluice('EventsDistributed'),
            sluice('StuckObjectsRerung'),
          ]),
          graph('Deliver', [
            sluice('DeliveryQueueLag', 'Maximum'),
            props.queues.Deliver.queue.metricApproximateAgeOfOldestMessage(),
            sluice('EventsDelivered'),
            sluice('DeliveryAttempts'),
            sluice('DeliveriesRetried'),
          ]),
          graph('Endpoint health', [
            sluice('WebhooksQuarantined'),
            sluice('WebhooksDisabled'),
            sluice('DeliveriesHeld'),
            sluice('EventsHeldOverflow'),
            sluice('EventsDiscardedByOwner'),
            sluice('EventsDiscardedWhileDisabled'),
            sluice('DeliveriesDelayed'),
            sluice('DeliveriesPacedFarAhead'),
            sluice('Probes'),
          ]),
          graph('Dead letters and canary', [
            sluice('DeadLetters'),
            props.queues.Deliver.deadLetterQueue.metricApproximateNumberOfMessagesVisible(),
            props.queues.Distribute.deadLetterQueue.metricApproximateNumberOfMessagesVisible(),
            props.queues.DistributeBulk.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
              label: 'Bulk lane: dead-lettered doorbells',
            }),
            sluice('CanaryDelivered'),
            // Which of a run's two ticks arrive: one path stuck shows here (runbook canary-stale).
            sluice('CanaryTicks', 'Sum', { path: 'quiet' }),
            sluice('CanaryTicks', 'Sum', { path: 'leased' }),
            sluice('CanaryLate'),
          ]),
        ],
      ],
    });
  }
}
