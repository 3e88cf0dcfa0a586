/**
 * `Sluice`: the whole of sluice as one construct. `new Sluice(this, 'Events', props)`
 * in any CDK app; the `Sluice` stack of bin/sluice.ts is that, with its outputs.
 */
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import type { RestApi } from 'aws-cdk-lib/aws-apigateway';
import type { Dashboard } from 'aws-cdk-lib/aws-cloudwatch';
import type { TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import type { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import type { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import type { Topic } from 'aws-cdk-lib/aws-sns';
import type { Queue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { buildConfig, ingestGraceProblem, type SluiceConfig, withinBounds } from '../functions/core/config.ts';
import { ConfigError } from '../functions/core/errors.ts';
import { scheduleSeconds } from '../functions/definitions/environment.ts';
import { Api } from './constructs/api.ts';
import { Delivery } from './constructs/delivery.ts';
import { acknowledgeNag } from './constructs/nag.ts';
import { Operations } from './constructs/operations.ts';
import { Pipeline } from './constructs/pipeline.ts';
import { Storage } from './constructs/storage.ts';

export interface SluiceProps {
  /**
   * Overrides of the settings in functions/core/config.ts (SPEC §4 defaults), or a
   * whole config built with `buildConfig`.
   * Every setting is checked; all problems are reported at once. A setting given as
   * undefined keeps its default.
   * @default {} (the defaults)
   */
  readonly config?: Partial<SluiceConfig> | Readonly<Record<string, unknown>>;
  /**
   * What happens to the tables (customer events, tenants, webhooks) when the
   * construct is removed.
   * @default RemovalPolicy.RETAIN
   */
  readonly tableRemovalPolicy?: RemovalPolicy;
  /**
   * Whether this construct sets API Gateway's CloudWatch role for its account and region
   * (`AWS::ApiGateway::Account`), which the API stage's access and error logs need. The
   * setting is one per account and region: leave it to one stack, and give false to every
   * other that would set it too (a second Sluice, or an account whose platform stack
   * sets it already), or each deploy takes it from the last.
   * @default true
   */
  readonly apiGatewayCloudWatchRole?: boolean;
}

export class Sluice extends Construct {
  readonly config: SluiceConfig;
  /**
   * The `service` dimension of this deployment's metrics (namespace `Sluice`), which its
   * alarms and dashboard watch: its stack's name and its path in the stack (`Sluice/Sluice`
   * for the `Sluice` stack), so no other deployment in the account and region shares it.
   */
  readonly metricsService: string;
  readonly api: RestApi;
  readonly adminKeySecret: Secret;
  readonly eventsTable: TableV2;
  readonly controlTable: TableV2;
  readonly distributeQueue: Queue;
  readonly distributeDeadLetterQueue: Queue;
  /** The doorbells of a tenant ringing many objects at once (functions/core/lanes.ts). */
  readonly distributeBulkQueue: Queue;
  readonly distributeBulkDeadLetterQueue: Queue;
  readonly deliverQueue: Queue;
  readonly deliverDeadLetterQueue: Queue;
  /** Subscribe webhook owners (or a relay to them) to hear when a webhook is disabled. */
  readonly webhookDisabledTopic: Topic;
  readonly functions: {
    readonly api: NodejsFunction;
    readonly authorizer: NodejsFunction;
    readonly distributor: NodejsFunction;
    readonly delivery: NodejsFunction;
    readonly reconciler: NodejsFunction;
    readonly canary: NodejsFunction;
    readonly canaryReceiver: NodejsFunction;
  };
  /**
   * Every alarm notifies this topic: subscribe on-call's pager with a filter on the
   * descriptions that start `PAGE` (README → Deploy), and a queue read in working hours
   * (email, chat, a ticket system) with one on `TICKET`, or without a filter.
   */
  readonly onCallTopic: Topic;
  readonly dashboard: Dashboard;

  constructor(scope: Construct, id: string, props: SluiceProps = {}) {
    super(scope, id);
    this.config = validate(props);
    // Every deployment in an account and region emits into the one Sluice namespace: a
    // service dimension shared by two (staging and production, say) would let one's
    // canary keep the other's canary-stale alarm quiet. Stack names are unique in an
    // account and region, construct paths in a stack.
    const stack = Stack.of(this);
    const path = this.node.scopes.slice(stack.node.scopes.length).map((scope) => scope.node.id);
    this.metricsService = [stack.stackName, ...path].join('/');
    const { metricsService } = this;

    // Tables hold customer data: kept unless the deployer says otherwise.
    const storage = new Storage(this, 'Storage', { removalPolicy: props.tableRemovalPolicy ?? RemovalPolicy.RETAIN });
    const delivery = new Delivery(this, 'Delivery', { config: this.config, metricsService, control: storage.control });
    const pipeline = new Pipeline(this, 'Pipeline', {
      config: this.config,
      metricsService,
      events: storage.events,
      control: storage.control,
      deliverQueue: delivery.deliver.queue,
    });
    const api = new Api(this, 'Api', {
      config: this.config,
      metricsService,
      events: storage.events,
      control: storage.control,
      distributeQueue: pipeline.distribute.queue,
      distributeBulkQueue: pipeline.distributeBulk.queue,
      deliverQueue: delivery.deliver.queue,
      cloudWatchRole: props.apiGatewayCloudWatchRole ?? true,
    });

    const operations = new Operations(this, 'Operations', {
      config: this.config,
      metricsService,
      api: api.restApi,
      control: storage.control,
      adminKeySecret: api.adminKeySecret,
      queues: { Distribute: pipeline.distribute, DistributeBulk: pipeline.distributeBulk, Deliver: delivery.deliver },
      functions: {
        api: api.apiFunction.function,
        authorizer: api.authorizerFunction.function,
        distributor: pipeline.distributor.function,
        delivery: delivery.delivery.function,
        reconciler: pipeline.reconciler.function,
      },
    });
    this.onCallTopic = operations.onCallTopic;
    this.dashboard = operations.dashboard;

    this.api = api.restApi;
    this.adminKeySecret = api.adminKeySecret;
    this.eventsTable = storage.events;
    this.controlTable = storage.control;
    this.distributeQueue = pipeline.distribute.queue;
    this.distributeDeadLetterQueue = pipeline.distribute.deadLetterQueue;
    this.distributeBulkQueue = pipeline.distributeBulk.queue;
    this.distributeBulkDeadLetterQueue = pipeline.distributeBulk.deadLetterQueue;
    this.deliverQueue = delivery.deliver.queue;
    this.deliverDeadLetterQueue = delivery.deliver.deadLetterQueue;
    this.webhookDisabledTopic = delivery.webhookDisabledTopic;
    this.functions = {
      api: api.apiFunction.function,
      authorizer: api.authorizerFunction.function,
      distributor: pipeline.distributor.function,
      delivery: delivery.delivery.function,
      reconciler: pipeline.reconciler.function,
      canary: operations.canary.function,
      canaryReceiver: operations.canaryReceiver.function,
    };

    acknowledgeNag(
      this,
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      'API Gateway needs this AWS managed policy to write its execution logs.',
    );
  }
}

/** Checks every prop and reports all problems in one ConfigError. */
function validate(props: SluiceProps): SluiceConfig {
  const problems: string[] = [];
  let config: SluiceConfig | undefined;
  const overrides: unknown = props.config ?? {};
  if (typeof overrides !== 'object' || overrides === null || Array.isArray(overrides)) {
    problems.push('config must be an object of settings');
  } else {
    try {
      config = buildConfig(overrides as Readonly<Record<string, unknown>>);
    } catch (error) {
      if (error instanceof ConfigError) problems.push(...error.problems);
      else throw error;
    }
  }
  if (props.tableRemovalPolicy === RemovalPolicy.SNAPSHOT) problems.push('tableRemovalPolicy SNAPSHOT is not supported by DynamoDB tables');
  if (props.apiGatewayCloudWatchRole !== undefined && typeof props.apiGatewayCloudWatchRole !== 'boolean') {
    problems.push('apiGatewayCloudWatchRole must be true or false');
  }
  // EventBridge schedules run in whole minutes: under one, they run every minute.
  for (const setting of ['reconcileIntervalSeconds', 'canaryIntervalSeconds'] as const) {
    // Checked on the setting as given too, so it is listed with the other problems (if
    // within its own bounds: one outside them is listed already).
    const given = (overrides as Record<string, unknown> | null)?.[setting];
    const seconds = config?.[setting] ?? (typeof given === 'number' && withinBounds(setting, given) ? given : undefined);
    if (seconds !== undefined && seconds > 60 && seconds % 60 !== 0) {
      problems.push(`${setting} must be a whole number of minutes in AWS (60, 120, …), or under 60 for every minute`);
    }
  }
  // An ingest that outlives the grace stores an event no turn delivers (see ingestGraceProblem).
  const graceProblem = ingestGraceProblem(config, (overrides as Record<string, unknown> | null)?.ingestGraceMs);
  if (graceProblem) problems.push(graceProblem);
  if (problems.length > 0 || !config) throw new ConfigError(problems);
  return Object.freeze({
    ...config,
    // What the schedules do with a setting under a minute: the functions reason from
    // the interval they really run at (the reconciler's re-ring lookback, say).
    reconcileIntervalSeconds: scheduleSeconds(config.reconcileIntervalSeconds),
    canaryIntervalSeconds: scheduleSeconds(config.canaryIntervalSeconds),
  });
}
