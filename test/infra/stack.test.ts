/**
 * What matters in the synthesized template: FIFO doorbells, redrive, event source
 * mappings with partial batch responses, Node 24 on arm64, the authorizer and
 * usage plans, error-shaped gateway responses, tables from the shared definitions,
 * and the config reaching every function.
 */
import { readFileSync } from 'node:fs';
import { App, type CfnElement, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { Queue } from 'aws-cdk-lib/aws-sqs';
import { CURRENTLY_RECOMMENDED_FLAGS } from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, DEFAULT_CONFIG, RETRY_SCHEDULE_MAX_ATTEMPTS } from '../../functions/core/config.ts';
import { AUTHORIZATION_HEADER_PATTERN } from '../../functions/core/keys.ts';
import { alarmDefinitions, alarmDescription } from '../../functions/definitions/alarms.ts';
import { API_STAGE_NAME, FUNCTION_ENTRIES } from '../../functions/definitions/environment.ts';
import {
  DELIVER_QUEUE,
  DISTRIBUTE_BULK_QUEUE,
  DISTRIBUTE_QUEUE,
  QUEUES,
  type QueueDefinition,
  SQS_MAX_MESSAGE_BYTES,
} from '../../functions/definitions/queues.ts';
import {
  BY_RESOURCE_INDEX,
  CHAINS_INDEX,
  CONTROL_TABLE,
  DELIVERY_WEBHOOK_ATTRIBUTES,
  DISTRIBUTOR_CONTROL_ATTRIBUTES,
  EVENTS_TABLE,
  projectionOf,
  SCHEDULE_INDEX,
  TABLE_ACCESS,
} from '../../functions/definitions/tables.ts';
import { CANARY_RECEIVER_CONCURRENCY } from '../../lib/constructs/operations.ts';
import { SluiceFunction } from '../../lib/constructs/sluice-function.ts';
import { tableFromDefinition } from '../../lib/constructs/storage.ts';
import { Sluice } from '../../lib/sluice.ts';
import { SluiceStack } from '../../lib/sluice-stack.ts';

// Bundling is not under test here: test/integration/bundles.test.ts builds and runs the bundles.
const NO_BUNDLING = { 'aws:cdk:bundling-stacks': [] };

function synth(config: Record<string, unknown> = {}): Template {
  const app = new App({ context: NO_BUNDLING });
  return Template.fromStack(new SluiceStack(app, 'Sluice', { config }));
}

// Context-style overrides, as cdk.json `sluice` would carry them.
const OVERRIDES = { objectQueueCap: 777, tenantRatePerSecond: 250, tenantBurst: 600 };

let template: Template;

/** The IAM statements of the role of the function whose logical id contains `fnName`, on the table whose id contains `tableName`. */
function statementsOnTable(fnName: string, tableName: string): Array<Record<string, unknown>> {
  const functions = template.findResources('AWS::Lambda::Function');
  const fnId = Object.keys(functions).find((id) => id.includes(fnName)) as string;
  const role = functions[fnId]?.Properties.Role['Fn::GetAtt'][0];
  const table = Object.keys(template.findResources('AWS::DynamoDB::GlobalTable')).find((id) => id.includes(tableName)) as string;
  expect(table).toBeDefined();
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === role))
    .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Array<Record<string, unknown>>)
    .filter((st) => JSON.stringify(st.Resource).includes(table));
}

beforeAll(() => {
  template = synth(OVERRIDES);
});

function logicalIdOf(type: string, props: Record<string, unknown>): string {
  const ids = Object.keys(template.findResources(type, { Properties: props }));
  expect(ids, `${type} ${JSON.stringify(props)}`).toHaveLength(1);
  return ids[0] as string;
}

/** A queue of the pipeline (not a dead-letter queue) by its definition's logical name. */
function queueOf(definition: QueueDefinition): [string, { Properties: Record<string, unknown> }] {
  const queues = template.findResources('AWS::SQS::Queue', { Properties: { RedrivePolicy: Match.anyValue() } });
  const entries = Object.entries(queues).filter(([id]) => new RegExp(`${definition.logicalName}Queue[0-9A-F]{8}$`).test(id));
  expect(entries, definition.logicalName).toHaveLength(1);
  return entries[0] as [string, { Properties: Record<string, unknown> }];
}

/** The properties of the access log's metric filter that makes `metricName`. */
function filterOf(template: Template, metricName: string): Record<string, unknown> & { FilterPattern: unknown } {
  const filter = Object.values(template.findResources('AWS::Logs::MetricFilter')).find(
    (f) => f.Properties.MetricTransformations?.[0]?.MetricName === metricName,
  );
  if (!filter) throw new Error(`no metric filter makes ${metricName}`);
  return filter.Properties;
}

describe('queues', () => {
  it('rings doorbells on two FIFO queues, the main and the bulk lane, each with a FIFO dead-letter queue', () => {
    for (const definition of [DISTRIBUTE_QUEUE, DISTRIBUTE_BULK_QUEUE]) {
      const [, distribute] = queueOf(definition);
      expect(distribute.Properties).toMatchObject({
        FifoQueue: true,
        ContentBasedDeduplication: false,
        // High throughput: per message group (object), not 300 calls/s for the queue.
        DeduplicationScope: 'messageGroup',
        FifoThroughputLimit: 'perMessageGroupId',
        VisibilityTimeout: definition.visibilityTimeoutSeconds,
        RedrivePolicy: { maxReceiveCount: definition.maxReceiveCount },
      });
      const dlqId = (distribute.Properties.RedrivePolicy as { deadLetterTargetArn: { 'Fn::GetAtt': string[] } }).deadLetterTargetArn[
        'Fn::GetAtt'
      ][0];
      expect(template.toJSON().Resources[dlqId as string].Properties.FifoQueue).toBe(true);
    }
  });

  it('sends deliveries through a standard queue with its own dead-letter queue', () => {
    const [, deliver] = queueOf(DELIVER_QUEUE);
    expect(deliver.Properties).toMatchObject({
      VisibilityTimeout: DELIVER_QUEUE.visibilityTimeoutSeconds,
      RedrivePolicy: { maxReceiveCount: DELIVER_QUEUE.maxReceiveCount },
    });
  });

  it("takes SQS's largest messages on every queue (a delivery's ASCII-escaped body can pass 256 KiB)", () => {
    const queues = Object.values(template.findResources('AWS::SQS::Queue'));
    expect(queues).toHaveLength(2 * QUEUES.length);
    for (const queue of queues) expect(queue.Properties.MaximumMessageSize).toBe(SQS_MAX_MESSAGE_BYTES);
  });

  it('encrypts every queue and refuses non-TLS access', () => {
    const queues = template.findResources('AWS::SQS::Queue');
    expect(Object.keys(queues)).toHaveLength(2 * QUEUES.length);
    for (const q of Object.values(queues)) expect(q.Properties.SqsManagedSseEnabled).toBe(true);
    template.resourcePropertiesCountIs(
      'AWS::SQS::QueuePolicy',
      {
        PolicyDocument: {
          Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
        },
      },
      2 * QUEUES.length,
    );
  });

  it('consumes every queue with partial batch responses, the defined batch size and a concurrency cap', () => {
    for (const definition of QUEUES) {
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        BatchSize: definition.batchSize,
        ScalingConfig: { MaximumConcurrency: definition.maxConcurrency },
      });
    }
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', QUEUES.length);
  });

  it('feeds both FIFO lanes to the distributor and the deliver queue to the delivery function, each timing out before its visibility', () => {
    for (const [definition, entry] of [
      [DISTRIBUTE_QUEUE, 'distributor'],
      [DISTRIBUTE_BULK_QUEUE, 'distributor'],
      [DELIVER_QUEUE, 'delivery'],
    ] as const) {
      const [queueId] = queueOf(definition);
      const [mapping] = Object.values(
        template.findResources('AWS::Lambda::EventSourceMapping', {
          Properties: { EventSourceArn: { 'Fn::GetAtt': [queueId, 'Arn'] } },
        }),
      );
      const functionId = mapping?.Properties.FunctionName.Ref as string;
      expect(functionId, entry).toMatch(new RegExp(entry, 'i'));
      const fn = template.toJSON().Resources[functionId];
      expect(fn.Properties.Timeout).toBe(definition.consumerTimeoutSeconds);
      // AWS's advice for SQS event sources (no batching window here): 6 × the function's timeout.
      expect(mapping?.Properties.MaximumBatchingWindowInSeconds ?? 0).toBe(0);
      expect(definition.visibilityTimeoutSeconds).toBeGreaterThanOrEqual(6 * fn.Properties.Timeout);
    }
  });

  it("lets Lambda invoke a function from a queue it sends to past 16 times: its recursive loop detection would cut a turn's or a delivery's chain", () => {
    // Lambda counts, in the trace header SQS carries, how often one message's lineage
    // invoked a function, and by default stops the 17th time, moving the message to the
    // dead-letter queue (https://docs.aws.amazon.com/lambda/latest/dg/invocation-recursion.html).
    // A hot object's turns ring it again one after the other, and a delivery's retries,
    // probes, releases and waits past 15 minutes go round the deliver queue: all of them
    // many more times than that. Each function fed by a queue it may send to allows it.
    const functions = template.findResources('AWS::Lambda::Function');
    const policies = Object.values(template.findResources('AWS::IAM::Policy'));
    const looping = new Set<string>();
    for (const mapping of Object.values(template.findResources('AWS::Lambda::EventSourceMapping'))) {
      const functionId = mapping.Properties.FunctionName.Ref as string;
      const roleId = functions[functionId]?.Properties.Role['Fn::GetAtt'][0] as string;
      const sends = policies
        .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === roleId))
        .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Array<Record<string, unknown>>)
        .filter((st) => st.Action === 'sqs:SendMessage')
        .flatMap((st) => (Array.isArray(st.Resource) ? st.Resource : [st.Resource]));
      if (sends.some((queue) => JSON.stringify(queue) === JSON.stringify(mapping.Properties.EventSourceArn))) looping.add(functionId);
    }
    expect([...looping].map((id) => id.replace(/Function[0-9A-F]{8}$/, '')).sort()).toEqual([
      'SluiceDelivery',
      'SluicePipelineDistributor',
    ]);
    for (const [id, fn] of Object.entries(functions)) {
      expect(fn.Properties.RecursiveLoop, id).toBe(looping.has(id) ? 'Allow' : undefined);
    }
  });
});

describe('functions', () => {
  it('run on Node.js 24, arm64, with the validated config, each with a log group', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    expect(Object.keys(functions)).toHaveLength(Object.keys(FUNCTION_ENTRIES).length);
    for (const fn of Object.values(functions)) {
      expect(fn.Properties.Runtime).toBe('nodejs24.x');
      expect(fn.Properties.Architectures).toEqual(['arm64']);
      expect(fn.Properties.LoggingConfig.LogGroup).toBeDefined();
      const config = JSON.parse(fn.Properties.Environment.Variables.SLUICE_CONFIG);
      expect(config).toEqual(buildConfig(OVERRIDES));
      expect(fn.Properties.Environment.Variables.POWERTOOLS_METRICS_NAMESPACE).toBe('Sluice');
    }
  });

  it("fit Lambda's 4 KB of environment variables with the largest config synth lets through", () => {
    // Larger than any config buildConfig accepts: every number as long as a number can be,
    // the retry schedule at its most attempts, each of the longest wait (365 days' retention).
    const largest = Object.fromEntries(
      Object.entries(DEFAULT_CONFIG).map(([key, value]) => [
        key,
        key === 'retryScheduleSeconds'
          ? Array.from({ length: RETRY_SCHEDULE_MAX_ATTEMPTS }, () => 365 * 86_400)
          : typeof value === 'number'
            ? Number.MAX_SAFE_INTEGER
            : value,
      ]),
    );
    for (const [id, fn] of Object.entries(template.findResources('AWS::Lambda::Function'))) {
      const variables = fn.Properties.Environment.Variables as Record<string, unknown>;
      // What CloudFormation fills in at deploy (a table name, an ARN, the API's URL) counted
      // at 256 characters: for a stack named Sluice none takes 130. A queue URL at 160: it is
      // https://sqs.<region>.amazonaws.com[.cn]/<account>/<name>, and a queue's name is at
      // most 80 characters.
      const deployed = Object.fromEntries(
        Object.entries(variables).map(([name, value]) => [
          name,
          name === 'SLUICE_CONFIG'
            ? JSON.stringify(largest)
            : typeof value === 'string'
              ? value
              : 'x'.repeat(name.endsWith('_QUEUE_URL') ? 160 : 256),
        ]),
      );
      // Lambda measures the variables as one JSON object (its error quotes "String measured: {…}").
      expect(Buffer.byteLength(JSON.stringify(deployed)), id).toBeLessThanOrEqual(4_096);
    }
    // One attempt more is refused at synth, before CloudFormation could fail partway.
    const longer = () =>
      new Sluice(new Stack(new App({ context: NO_BUNDLING }), 'Long'), 'S', {
        config: { retryScheduleSeconds: Array.from({ length: RETRY_SCHEDULE_MAX_ATTEMPTS + 1 }, () => 0) },
      });
    expect(longer).toThrow(/retryScheduleSeconds must have at most 100 entries/);
  });

  it('refuses a grant of only some attributes of an index through bindTable, which would leave the index unconditioned', () => {
    const stack = new Stack(new App({ context: NO_BUNDLING }), 'Guard');
    const table = tableFromDefinition(stack, CONTROL_TABLE, RemovalPolicy.DESTROY);
    const fn = new SluiceFunction(stack, 'Fn', { entry: FUNCTION_ENTRIES.distributor, config: buildConfig({}), metricsService: 'guard' });
    expect(() => fn.bindTable(table, TABLE_ACCESS.distributor.control, 'CONTROL')).toThrow(/bindAttributes/);
  });

  it('may write logs only to their own log group: no AWS managed policy, whose log permissions cover every group', () => {
    const functions = Object.values(template.findResources('AWS::Lambda::Function'));
    const roles = template.findResources('AWS::IAM::Role');
    const policies = Object.values(template.findResources('AWS::IAM::Policy'));
    for (const fn of functions) {
      const roleId = fn.Properties.Role['Fn::GetAtt'][0] as string;
      expect(roles[roleId]?.Properties.ManagedPolicyArns, roleId).toBeUndefined();
      const logStatements = policies
        .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === roleId))
        .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Array<Record<string, unknown>>)
        .filter((st) => JSON.stringify(st.Action).includes('logs:'));
      expect(logStatements, roleId).toEqual([
        {
          Effect: 'Allow',
          Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          Resource: { 'Fn::GetAtt': [fn.Properties.LoggingConfig.LogGroup.Ref, 'Arn'] },
        },
      ]);
    }
  });

  it('may only send to the queues it sends to and only get (the canary also put) the secrets it reads: no call its code does not make', () => {
    const functions = Object.values(template.findResources('AWS::Lambda::Function'));
    const policies = Object.values(template.findResources('AWS::IAM::Policy'));
    // What Lambda's event source mappings need to consume a queue is the mapping's, not the code's.
    const consume = ['sqs:ChangeMessageVisibility', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage'];
    for (const fn of functions) {
      const roleId = fn.Properties.Role['Fn::GetAtt'][0] as string;
      const statements = policies
        .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === roleId))
        .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Array<Record<string, unknown>>);
      for (const st of statements) {
        const actions = [st.Action].flat() as string[];
        if (actions.some((a) => a.startsWith('sqs:')) && !actions.includes('sqs:ReceiveMessage')) {
          expect(actions, roleId).toEqual(['sqs:SendMessage']);
        }
        if (actions.includes('sqs:ReceiveMessage')) expect([...actions].sort(), roleId).toEqual(consume);
        if (actions.some((a) => a.startsWith('secretsmanager:'))) {
          expect(
            actions.filter((a) => a !== 'secretsmanager:PutSecretValue'),
            roleId,
          ).toEqual(['secretsmanager:GetSecretValue']);
        }
      }
    }
  });

  it('runs the reconciler on a schedule, one at a time', () => {
    template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(1 minute)' });
    template.hasResourceProperties('AWS::Lambda::Function', { ReservedConcurrentExecutions: 1 });
  });

  it('has Lambda retry no failed run of the reconciler or the canary, nor keep a throttled one past a minute: the next scheduled run is the retry (one at a time, a retry beside it would be throttled)', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    const invokeConfigs = Object.values(template.findResources('AWS::Lambda::EventInvokeConfig'));
    for (const name of ['Reconciler', 'Canary']) {
      const id = Object.keys(functions).find((key) => key.includes(name) && !key.includes('Receiver')) as string;
      const config = invokeConfigs.find((c) => JSON.stringify(c.Properties.FunctionName).includes(id));
      expect(config?.Properties.MaximumRetryAttempts, name).toBe(0);
      // A run throttled behind the one still going is not a failed run: Lambda keeps such
      // an event and tries it again for up to its maximum age, 6 hours unless set.
      expect(config?.Properties.MaximumEventAgeInSeconds, name).toBe(60);
    }
  });

  it("deploys a change of the authorizer to the stage: cdk.json puts the authorizer's settings in the API deployment's identity", async () => {
    const { readFileSync } = await import('node:fs');
    const flag = '@aws-cdk/aws-apigateway:authorizerChangeDeploymentLogicalId';
    const fromCdkJson = JSON.parse(readFileSync('cdk.json', 'utf8')).context as Record<string, unknown>;
    const deploymentId = (context: Record<string, unknown>) => {
      const stack = new Stack(new App({ context: { ...context, ...NO_BUNDLING } }), 'Flagged');
      new Sluice(stack, 'S');
      return Object.keys(Template.fromStack(stack).findResources('AWS::ApiGateway::Deployment'))[0];
    };
    expect(fromCdkJson[flag]).toBe(true);
    expect(deploymentId(fromCdkJson)).not.toBe(deploymentId({ ...fromCdkJson, [flag]: false }));
  });

  it('refuses an invalid config, listing every problem', () => {
    const app = new App({ context: NO_BUNDLING });
    const stack = new Stack(app, 'Bad');
    expect(
      () =>
        new Sluice(stack, 'S', {
          config: { objectQueueCap: 0, nope: 1, reconcileIntervalSeconds: 90, ingestGraceMs: 20_000 },
          tableRemovalPolicy: RemovalPolicy.SNAPSHOT,
          // As a JavaScript app could pass it.
          apiGatewayCloudWatchRole: 'no' as unknown as boolean,
        }),
    ).toThrow(
      /(?=.*objectQueueCap)(?=.*nope)(?=.*tableRemovalPolicy)(?=.*apiGatewayCloudWatchRole must be true or false)(?=.*reconcileIntervalSeconds must be a whole number of minutes)(?=.*ingestGraceMs must be more)/,
    );
  });

  it('refuses schedules EventBridge cannot run: intervals over a minute that are not whole minutes', () => {
    const sluice = (config: Record<string, unknown>) => () =>
      new Sluice(new Stack(new App({ context: NO_BUNDLING }), 'Schedules'), 'S', { config });
    expect(sluice({ reconcileIntervalSeconds: 90, canaryIntervalSeconds: 150 })).toThrow(
      /(?=.*reconcileIntervalSeconds must be a whole number of minutes)(?=.*canaryIntervalSeconds)/,
    );
    expect(sluice({ reconcileIntervalSeconds: 120, canaryIntervalSeconds: 30 })).not.toThrow();
  });

  it('names a setting outside its own bounds once, not again for the rules its value was never going to meet', () => {
    const app = new App({ context: NO_BUNDLING });
    let message = '';
    try {
      new Sluice(new Stack(app, 'Once'), 'S', {
        config: { reconcileIntervalSeconds: 3_700, canaryIntervalSeconds: 61.5, ingestGraceMs: 0 },
      });
    } catch (error) {
      message = (error as Error).message;
    }
    for (const setting of ['reconcileIntervalSeconds', 'canaryIntervalSeconds', 'ingestGraceMs']) {
      expect(message.split(`${setting} must`).length - 1, `${setting} in: ${message}`).toBe(1);
    }
  });

  it("refuses an ingest grace an ingest can outlive: twice the API function's timeout bounds an ingest's writes", () => {
    const sluice = (ingestGraceMs: number) => () =>
      new Sluice(new Stack(new App({ context: NO_BUNDLING }), 'Grace'), 'S', { config: { ingestGraceMs } });
    expect(sluice(20_000)).toThrow(/ingestGraceMs must be more than twice the API function's timeout \(58000 ms\)/);
    // A missing slot is judged by the reservation time of a later slot (or the meta item's
    // last one): that ingest's clock reading, taken up to a timeout before its write, which
    // a slower ingest's earlier slot preceded, and whose own writes may then take a timeout
    // more. With 30 s, an event written 50 s after that reading lands behind the cursor.
    expect(sluice(30_000)).toThrow(/ingestGraceMs/);
    expect(sluice(58_000)).toThrow(/ingestGraceMs/);
    expect(sluice(58_001)).not.toThrow();
  });

  it('takes a setting the props give as undefined for one not given: its default, as for any other CDK prop', () => {
    // `config: { objectQueueCap: cap }`, with cap read from somewhere that had none:
    // Partial<SluiceConfig> lets it through tsc, and synth refused the default it meant.
    const cap: number | undefined = undefined;
    const stack = new Stack(new App({ context: NO_BUNDLING }), 'Unset');
    expect(() => new Sluice(stack, 'S', { config: { objectQueueCap: cap, retentionDays: 3 } })).not.toThrow();
    for (const fn of Object.values(Template.fromStack(stack).findResources('AWS::Lambda::Function'))) {
      expect(JSON.parse(fn.Properties.Environment.Variables.SLUICE_CONFIG)).toMatchObject({ objectQueueCap: 10_000, retentionDays: 3 });
    }
    // A name that is no setting is still refused, whatever its value.
    expect(() => new Sluice(new Stack(new App({ context: NO_BUNDLING }), 'Typo'), 'S', { config: { objectQueueCapp: undefined } })).toThrow(
      /objectQueueCapp is not a setting/,
    );
  });

  it('gives the functions the intervals their schedules run at: a setting under a minute runs every minute', () => {
    const stack = new Stack(new App({ context: NO_BUNDLING }), 'Minute');
    new Sluice(stack, 'S', { config: { reconcileIntervalSeconds: 30, canaryIntervalSeconds: 20 } });
    for (const fn of Object.values(Template.fromStack(stack).findResources('AWS::Lambda::Function'))) {
      const config = fn.Properties.Environment?.Variables?.SLUICE_CONFIG;
      if (config === undefined) continue;
      expect(JSON.parse(config)).toMatchObject({ reconcileIntervalSeconds: 60, canaryIntervalSeconds: 60 });
    }
  });
});

describe('API', () => {
  it('takes API keys from a TOKEN authorizer reading the Authorization header', () => {
    template.hasResourceProperties('AWS::ApiGateway::RestApi', { ApiKeySourceType: 'AUTHORIZER' });
    template.hasResourceProperties('AWS::ApiGateway::Authorizer', {
      Type: 'TOKEN',
      IdentitySource: 'method.request.header.Authorization',
    });
    template.hasResourceProperties('AWS::ApiGateway::Authorizer', { AuthorizerResultTtlInSeconds: 60 });
    // Every body reaches the API function as its bytes, which it refuses unless they are UTF-8.
    template.hasResourceProperties('AWS::ApiGateway::RestApi', { BinaryMediaTypes: ['*/*'] });
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      StageName: API_STAGE_NAME,
      AccessLogSetting: { DestinationArn: Match.anyValue(), Format: Match.anyValue() },
    });
  });

  it('counts from its access log the requests API Gateway throttles, which no function sees, for events-rejected-or-dropped', () => {
    const [stageId, stage] = Object.entries(template.findResources('AWS::ApiGateway::Stage'))[0] ?? [];
    expect(stageId).toBeDefined();
    const format = JSON.parse(stage?.Properties.AccessLogSetting.Format) as Record<string, string>;
    const service = format.service as string;
    expect(service).toBe('Sluice/Sluice');
    expect(format).toMatchObject({
      responseType: '$context.error.responseType',
      tenant: '$context.authorizer.principalId',
      resourcePath: '$context.resourcePath',
      status: '$context.status',
      // A 500 that never reached the API function (a body past Lambda's invoke limit) says so.
      integrationStatus: '$context.integrationStatus',
      integrationError: '$context.integrationErrorMessage',
    });
    const filter = filterOf(template, 'RequestsThrottled');
    // On the stage's own access log group.
    expect(stage?.Properties.AccessLogSetting.DestinationArn).toEqual({
      'Fn::GetAtt': [(filter.LogGroupName as { Ref: string }).Ref, 'Arn'],
    });
    expect(filter.FilterPattern).toContain('$.responseType = "THROTTLED"');
    // The health check has a throttle of its own, against anonymous floods: not anyone's events.
    expect(filter.FilterPattern).toContain('$.resourcePath != "/v1/health"');
    expect(filter.MetricTransformations).toEqual([
      {
        MetricNamespace: 'Sluice',
        MetricName: 'RequestsThrottled',
        MetricValue: '1',
        Dimensions: [{ Key: 'service', Value: '$.service' }],
      },
    ]);
    const alarm = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
      String(a.Properties.AlarmDescription).startsWith('TICKET Events rejected or dropped'),
    );
    const watched = (alarm?.Properties.Metrics as Array<{ MetricStat?: { Metric: { MetricName: string; Dimensions: unknown } } }>)
      .flatMap((m) => (m.MetricStat ? [m.MetricStat.Metric] : []))
      .find((m) => m.MetricName === 'RequestsThrottled');
    expect(watched?.Dimensions).toEqual([{ Name: 'service', Value: service }]);
    const dashboard = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]?.Properties.DashboardBody);
    expect(dashboard).toContain('RequestsThrottled');
  });

  it("pages for the API's 5xx but not for bodies too large for Lambda's invoke (a producer's mistake, a ticket), counted from the access log", () => {
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm'));
    const watchedBy = (title: string) =>
      (
        alarms.find((a) => String(a.Properties.AlarmDescription).startsWith(title))?.Properties.Metrics as Array<{
          MetricStat?: { Metric: { Namespace: string; MetricName: string } };
        }>
      ).flatMap((m) => (m.MetricStat ? [`${m.MetricStat.Metric.Namespace}/${m.MetricStat.Metric.MetricName}`] : []));
    expect(watchedBy('PAGE Ingest 5xx')).toContain('Sluice/ApiServerErrors');
    expect(watchedBy('PAGE Ingest 5xx')).not.toContain('AWS/ApiGateway/5XXError');
    expect(watchedBy('TICKET Events rejected or dropped')).toContain('Sluice/RequestsTooLarge');
    // Every 5xx of the API's but those Lambda refused to invoke it with as too large (its 413).
    const errors = filterOf(template, 'ApiServerErrors').FilterPattern as string;
    expect(errors).toContain('$.status = %5[0-9][0-9]%');
    expect(errors).toContain('$.integrationStatus != "413"');
    const tooLarge = filterOf(template, 'RequestsTooLarge').FilterPattern as string;
    expect(tooLarge).toContain('$.status = %5[0-9][0-9]%');
    expect(tooLarge).toContain('$.integrationStatus = "413"');
    // API Gateway's own count stays on the dashboard.
    const dashboard = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]?.Properties.DashboardBody);
    expect(dashboard).toContain('ApiServerErrors');
    expect(dashboard).toContain('5XXError');
  });

  it("pages for events dropped past retention, not for what on-call's own drop switch discards", () => {
    const alarm = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
      String(a.Properties.AlarmDescription).startsWith('TICKET Events rejected or dropped'),
    );
    const dropped = (
      alarm?.Properties.Metrics as Array<{ MetricStat?: { Metric: { MetricName: string; Dimensions: Array<{ Name: string }> } } }>
    )
      .flatMap((m) => (m.MetricStat ? [m.MetricStat.Metric] : []))
      .filter((m) => m.MetricName === 'EventsDropped');
    expect(dropped).toHaveLength(1);
    expect(dropped[0]?.Dimensions).toEqual(expect.arrayContaining([{ Name: 'reason', Value: 'retention' }]));
    expect(dropped[0]?.Dimensions.map((d) => d.Name).sort()).toEqual(['reason', 'service']);
  });

  it('makes the execution log group API Gateway would otherwise make itself, kept forever, before the stage can write to it', () => {
    const [groupId, group] = Object.entries(template.findResources('AWS::Logs::LogGroup')).find(([, g]) =>
      JSON.stringify(g.Properties.LogGroupName ?? '').includes('API-Gateway-Execution-Logs_'),
    ) ?? [undefined, undefined];
    expect(group?.Properties.RetentionInDays).toBe(30);
    expect(group?.DeletionPolicy).toBe('Delete');
    expect(JSON.stringify(group?.Properties.LogGroupName)).toContain(`/${API_STAGE_NAME}`);
    const [stage] = Object.values(template.findResources('AWS::ApiGateway::Stage'));
    expect(stage?.DependsOn).toContain(groupId);
  });

  it('keeps anonymous requests from invoking Lambda freely: headers that cannot hold a key never reach the authorizer, and the health check has a throttle', () => {
    template.hasResourceProperties('AWS::ApiGateway::Authorizer', { IdentityValidationExpression: AUTHORIZATION_HEADER_PATTERN });
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      MethodSettings: Match.arrayWith(
        ['GET', 'HEAD'].map((method) =>
          Match.objectLike({ HttpMethod: method, ResourcePath: '/~1v1~1health', ThrottlingRateLimit: 10, ThrottlingBurstLimit: 20 }),
        ),
      ),
    });
    // No other method has a stage throttle: it would be shared by every tenant.
    const stage = Object.values(template.findResources('AWS::ApiGateway::Stage'))[0];
    const throttled = (stage?.Properties.MethodSettings as Array<Record<string, unknown>>).filter(
      (m) => m.ThrottlingRateLimit !== undefined,
    );
    expect(throttled).toHaveLength(2);
  });

  it('guards every route but the health check with the authorizer and a usage plan key', () => {
    template.hasResourceProperties('AWS::ApiGateway::Method', {
      HttpMethod: 'ANY',
      AuthorizationType: 'CUSTOM',
      ApiKeyRequired: true,
      AuthorizerId: Match.anyValue(),
    });
    // The health check, GET and HEAD (an uptime check's), with neither.
    for (const method of ['GET', 'HEAD']) {
      const health = template.findResources('AWS::ApiGateway::Method', { Properties: { HttpMethod: method, AuthorizationType: 'NONE' } });
      expect(Object.values(health)).toHaveLength(1);
      expect(Object.values(health)[0]?.Properties.ApiKeyRequired).not.toBe(true);
    }
    template.resourceCountIs('AWS::ApiGateway::Method', 3);
  });

  it('throttles the admin by a usage plan from the config, selected by the key the authorizer returns', () => {
    const planId = logicalIdOf('AWS::ApiGateway::UsagePlan', {
      Throttle: { RateLimit: OVERRIDES.tenantRatePerSecond, BurstLimit: OVERRIDES.tenantBurst },
      ApiStages: [Match.objectLike({ Stage: Match.anyValue() })],
    });
    const keyId = logicalIdOf('AWS::ApiGateway::ApiKey', {});
    template.hasResourceProperties('AWS::ApiGateway::UsagePlanKey', {
      KeyType: 'API_KEY',
      UsagePlanId: { Ref: planId },
      KeyId: { Ref: keyId },
    });
    const keyValue = template.toJSON().Resources[keyId].Properties.Value as string;
    expect(keyValue.length).toBeGreaterThanOrEqual(20);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ ADMIN_USAGE_KEY: keyValue, ADMIN_KEY_SECRET_ARN: Match.anyValue() }) },
    });
  });

  it("gives each deployment's admin usage key a value of its own: API Gateway refuses a value another key of the region has", () => {
    // Staging and production from one app definition, told apart by stack name (a stage
    // from context, say): the same construct paths under two stack names in one account.
    const adminKeyValueOf = (stackName: string) => {
      const app = new App({ context: NO_BUNDLING });
      const stack = new SluiceStack(app, 'Sluice', { stackName });
      const [key] = Object.values(Template.fromStack(stack).findResources('AWS::ApiGateway::ApiKey'));
      return key?.Properties.Value as string;
    };
    const staging = adminKeyValueOf('sluice-staging');
    const production = adminKeyValueOf('sluice-production');
    expect(staging).not.toBe(production);
    // The `Sluice` stack keeps the value it was deployed with: a new value replaces the key.
    expect(adminKeyValueOf('Sluice')).toBe(template.toJSON().Resources[logicalIdOf('AWS::ApiGateway::ApiKey', {})].Properties.Value);
    expect(adminKeyValueOf('Sluice')).toBe('sluice-admin-SluiceApi8D9E45B1');
  });

  it('keeps the admin key in a generated secret: 48 characters under the field token', () => {
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: { SecretStringTemplate: '{}', GenerateStringKey: 'token', ExcludePunctuation: true, PasswordLength: 48 },
    });
  });

  it('lets only the API function manage API keys and usage plans, on their API Gateway paths only', () => {
    const apigatewayStatements = Object.values(template.findResources('AWS::IAM::Policy')).flatMap((policy) =>
      (policy.Properties.PolicyDocument.Statement as Array<{ Action: string | string[]; Resource: unknown }>).filter((st) =>
        JSON.stringify(st.Action).includes('apigateway:'),
      ),
    );
    const granted = apigatewayStatements.map((st) => ({
      action: st.Action,
      paths: ([] as unknown[]).concat(st.Resource).map((r) => {
        const parts = (r as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
        return parts[parts.length - 1];
      }),
    }));
    expect(granted).toEqual([
      { action: 'apigateway:POST', paths: ['::/apikeys', '::/usageplans', '::/usageplans/*/keys'] },
      { action: 'apigateway:DELETE', paths: ['::/apikeys/*', '::/usageplans/*'] },
      // Listing the plans (a lost answer's plan to remove), never the keys, whose values GET would show.
      { action: 'apigateway:GET', paths: ['::/usageplans'] },
      { action: 'apigateway:PATCH', paths: ['::/usageplans/*'] },
    ]);
  });

  it('shapes gateway errors like sluice errors, with Retry-After on 429s', () => {
    const expectations: Array<[string, string | undefined, string]> = [
      ['UNAUTHORIZED', '401', 'unauthorized'],
      // The authorizer refuses a bad key with a Deny policy (a thrown 'Unauthorized' would be a function error).
      ['ACCESS_DENIED', '401', 'unauthorized'],
      ['INVALID_API_KEY', '403', 'forbidden'],
      ['MISSING_AUTHENTICATION_TOKEN', '404', 'not_found'],
      ['THROTTLED', '429', 'rate_limited'],
      ['QUOTA_EXCEEDED', '429', 'rate_limited'],
      ['REQUEST_TOO_LARGE', '413', 'payload_too_large'],
      // The defaults keep each type's own status (a 504 stays a 504).
      ['DEFAULT_4XX', undefined, 'invalid_request'],
      ['DEFAULT_5XX', undefined, 'internal'],
    ];
    template.resourceCountIs('AWS::ApiGateway::GatewayResponse', expectations.length);
    for (const [type, status, code] of expectations) {
      const [response] = Object.values(template.findResources('AWS::ApiGateway::GatewayResponse', { Properties: { ResponseType: type } }));
      expect(response?.Properties.StatusCode, type).toBe(status);
      const body = JSON.parse(response?.Properties.ResponseTemplates['application/json']);
      expect(Object.keys(body), type).toEqual(['error']);
      expect(body.error.code, type).toBe(code);
      expect(body.error.message, type).toEqual(expect.any(String));
      const retryAfter = response?.Properties.ResponseParameters?.['gatewayresponse.header.Retry-After'];
      expect(retryAfter, type).toBe(status === '429' ? "'1'" : undefined);
    }
  });
});

describe('tables', () => {
  it('are built from the shared definitions, with TTL, PITR and indexes', () => {
    for (const definition of [EVENTS_TABLE, CONTROL_TABLE]) {
      template.hasResourceProperties('AWS::DynamoDB::GlobalTable', {
        KeySchema: [
          { AttributeName: definition.partitionKey.name, KeyType: 'HASH' },
          { AttributeName: definition.sortKey.name, KeyType: 'RANGE' },
        ],
        BillingMode: 'PAY_PER_REQUEST',
        TimeToLiveSpecification: { AttributeName: definition.ttlAttribute, Enabled: true },
        Replicas: [Match.objectLike({ PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true } })],
        GlobalSecondaryIndexes: definition.indexes.map((index) =>
          Match.objectLike({
            IndexName: index.indexName,
            KeySchema: [
              { AttributeName: index.partitionKey.name, KeyType: 'HASH' },
              { AttributeName: index.sortKey.name, KeyType: 'RANGE' },
            ],
            Projection: {
              ProjectionType: projectionOf(index).type,
              ...(projectionOf(index).nonKeyAttributes && { NonKeyAttributes: projectionOf(index).nonKeyAttributes }),
            },
          }),
        ),
        SSESpecification: { SSEEnabled: true },
      });
    }
  });

  it('are retained when the stack is deleted', () => {
    const tables = template.findResources('AWS::DynamoDB::GlobalTable');
    for (const table of Object.values(tables)) expect(table.DeletionPolicy).toBe('Retain');
  });

  it('are all that a deleted stack keeps, with the account-wide API Gateway logging role (README, Deploy)', () => {
    const kept = Object.entries(template.toJSON().Resources as Record<string, { Type: string; DeletionPolicy?: string }>)
      .filter(([, resource]) => resource.DeletionPolicy === 'Retain')
      .map(([, resource]) => resource.Type)
      .sort();
    expect(kept).toEqual(['AWS::ApiGateway::Account', 'AWS::DynamoDB::GlobalTable', 'AWS::DynamoDB::GlobalTable', 'AWS::IAM::Role']);
  });

  it('go with the stack only when the deployer says so, and the construct takes a built config', () => {
    const app = new App({ context: NO_BUNDLING });
    const stack = new Stack(app, 'Disposable');
    new Sluice(stack, 'Events', { config: buildConfig({ retentionDays: 3 }), tableRemovalPolicy: RemovalPolicy.DESTROY });
    const disposable = Template.fromStack(stack);
    const tables = Object.values(disposable.findResources('AWS::DynamoDB::GlobalTable'));
    expect(tables).toHaveLength(2);
    for (const table of tables) expect(table.DeletionPolicy).toBe('Delete');
    const [fn] = Object.values(disposable.findResources('AWS::Lambda::Function'));
    expect(JSON.parse(fn?.Properties.Environment.Variables.SLUICE_CONFIG).retentionDays).toBe(3);
  });
});

describe('cdk-nag', () => {
  it('finds nothing unacknowledged under the AwsSolutions rules', () => {
    const app = new App({ context: NO_BUNDLING });
    new SluiceStack(app, 'Sluice');
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    expect(() => app.synth()).not.toThrow();
  });

  it("finds nothing unacknowledged either in an app `cdk init` made, with CDK's recommended feature flags on", () => {
    // A platform team's own app (SPEC §1) turns every recommended flag on. One of them
    // (@aws-cdk/aws-kms:applyImportedAliasPermissionsToPrincipal) turns a grant through an
    // imported key alias, the webhook-disabled topic's alias/aws/sns, into KMS actions on
    // every key of the account, which AwsSolutions-IAM5 refuses: synth failed there.
    const app = new App({ context: { ...NO_BUNDLING, ...CURRENTLY_RECOMMENDED_FLAGS } });
    const stack = new Stack(app, 'Platform');
    new Sluice(stack, 'Events');
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    expect(() => app.synth()).not.toThrow();
    // The AWS-managed SNS key lets SNS use it for any caller of the account: a publisher needs sns:Publish alone.
    const statements = Object.values(Template.fromStack(stack).findResources('AWS::IAM::Policy')).flatMap(
      (policy) => policy.Properties.PolicyDocument.Statement as Array<{ Action: string | string[] }>,
    );
    expect(statements.flatMap((st) => [st.Action].flat()).filter((action) => action.startsWith('kms:'))).toEqual([]);
  });

  it('does fail synth on an unacknowledged finding', () => {
    const app = new App({ context: NO_BUNDLING });
    const stack = new SluiceStack(app, 'Sluice');
    // A queue without a dead-letter queue is an AwsSolutions-SQS3 finding.
    new Queue(stack, 'Unguarded', { enforceSSL: true });
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    expect(() => app.synth()).toThrow();
  });
});

describe('webhook-disabled notices', () => {
  it('publish to an encrypted, TLS-only SNS topic that the delivery function alone may publish to (the API sends none)', () => {
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
      },
    });
    const publishers = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) => JSON.stringify(p).includes('sns:Publish'));
    expect(publishers).toHaveLength(1);
    const withTopicEnv = Object.values(template.findResources('AWS::Lambda::Function')).filter(
      (fn) => fn.Properties.Environment.Variables.WEBHOOK_DISABLED_TOPIC_ARN !== undefined,
    );
    expect(withTopicEnv).toHaveLength(1);
    expect(withTopicEnv[0]?.Properties.Environment.Variables.WEBHOOK_DISABLED_TOPIC_ARN).toBeDefined();
    expect(JSON.stringify(withTopicEnv[0]?.Properties.Role)).toContain('Delivery');
  });
});

describe('operations', () => {
  it('has every alarm of the definitions, with its threshold, its description led by its severity, and the on-call topic as action', () => {
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm'));
    // The template's config: OVERRIDES on the defaults (every interval a minute).
    const definitions = alarmDefinitions(buildConfig(OVERRIDES));
    expect(alarms).toHaveLength(definitions.length);
    const topics = Object.keys(template.findResources('AWS::SNS::Topic', { Properties: { DisplayName: 'sluice on-call' } }));
    expect(topics).toHaveLength(1);
    const [topicId] = topics;
    expect(definitions.filter((d) => d.severity === 'ticket').length).toBeGreaterThan(0);
    for (const definition of definitions) {
      const alarm = alarms.find((a) => a.Properties.AlarmDescription === alarmDescription(definition));
      expect(alarm, definition.name).toBeDefined();
      // What a pager's subscription filters on (README → Deploy): the description's first word.
      expect(alarm?.Properties.AlarmDescription.split(' ')[0], definition.name).toBe(definition.severity === 'page' ? 'PAGE' : 'TICKET');
      // CloudWatch's most for a description.
      expect(alarm?.Properties.AlarmDescription.length, definition.name).toBeLessThanOrEqual(1024);
      expect(alarm?.Properties).toMatchObject({
        Threshold: definition.threshold,
        EvaluationPeriods: definition.evaluationPeriods,
        DatapointsToAlarm: definition.datapointsToAlarm,
        TreatMissingData: definition.missingData,
        AlarmActions: [{ Ref: topicId }],
        OKActions: [{ Ref: topicId }],
      });
    }
  });

  it("builds the scheduled functions' alarms from their intervals, and a heartbeat that pages when the reconciler does not run", () => {
    const slow = synth({ reconcileIntervalSeconds: 300, canaryIntervalSeconds: 120 });
    const alarms = Object.values(slow.findResources('AWS::CloudWatch::Alarm'));
    const definitions = alarmDefinitions(buildConfig({ reconcileIntervalSeconds: 300, canaryIntervalSeconds: 120 }));
    expect(alarms).toHaveLength(definitions.length);
    const alarm = (name: string) => {
      const definition = definitions.find((d) => d.name === name);
      return alarms.find((a) => a.Properties.AlarmDescription === alarmDescription(definition as (typeof definitions)[number]))?.Properties;
    };
    // One run every 5 minutes: each period is one run, and a failed run pages.
    for (const name of ['reconciler-errors', 'reconciler-throttles']) {
      expect(alarm(name), name).toMatchObject({ Period: 300, EvaluationPeriods: 1, DatapointsToAlarm: 1, Statistic: 'Sum' });
    }
    // One every 2 minutes: each of the last 3 runs.
    expect(alarm('canary-errors')).toMatchObject({ Period: 120, EvaluationPeriods: 3, DatapointsToAlarm: 3 });
    // The other functions are still read over minutes.
    expect(alarm('distributor-throttles')).toMatchObject({ Period: 60, EvaluationPeriods: 5, DatapointsToAlarm: 3 });
    expect(alarm('reconciler-stale')).toMatchObject({
      MetricName: 'ScheduledObjects',
      Namespace: 'Sluice',
      Statistic: 'SampleCount',
      Period: 300,
      EvaluationPeriods: 3,
      DatapointsToAlarm: 3,
      Threshold: 1,
      ComparisonOperator: 'LessThanThreshold',
      TreatMissingData: 'breaching',
    });
  });

  it("lets CloudWatch's alarms publish to the on-call topic: its own key and its policy allow them", () => {
    const [topicId, topic] = Object.entries(
      template.findResources('AWS::SNS::Topic', { Properties: { DisplayName: 'sluice on-call' } }),
    )[0] as [string, { Properties: { KmsMasterKeyId: unknown } }];
    // Not the AWS-managed alias/aws/sns, whose policy CloudWatch cannot be given.
    expect(topic.Properties.KmsMasterKeyId).toMatchObject({ 'Fn::GetAtt': [expect.any(String), 'Arn'] });
    const keyId = (topic.Properties.KmsMasterKeyId as { 'Fn::GetAtt': [string] })['Fn::GetAtt'][0];
    const key = template.findResources('AWS::KMS::Key')[keyId] as { Properties: { KeyPolicy: { Statement: unknown[] } } };
    expect(key.Properties.KeyPolicy.Statement).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          Principal: { Service: 'cloudwatch.amazonaws.com' },
          Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          Condition: expect.objectContaining({ StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } }),
        }),
      ]),
    );
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [{ Ref: topicId }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          Match.objectLike({ Effect: 'Allow', Principal: { Service: 'cloudwatch.amazonaws.com' }, Action: 'sns:Publish' }),
        ]),
      },
    });
  });

  it("draws this API's own metrics by a name no other API in the account has (its alarms read its access log's)", () => {
    const [api] = Object.values(template.findResources('AWS::ApiGateway::RestApi')) as Array<{ Properties: { Name: string } }>;
    expect(api?.Properties.Name).toMatch(/^Sluice.+/);
    const body = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]?.Properties.DashboardBody);
    const names = body.match(/ApiName\\",\\"[^\\]*/g) ?? [];
    expect(names.length).toBeGreaterThan(0);
    expect(new Set(names)).toEqual(new Set([`ApiName\\",\\"${api?.Properties.Name}`]));
    expect(JSON.stringify(template.findResources('AWS::CloudWatch::Alarm'))).not.toContain('ApiName');
  });

  it("watches each deployment's own metrics: two in one account and region do not answer each other's alarms", () => {
    // Staging and production in one account, as two stacks or two constructs: their
    // functions emit into the one Sluice namespace, so only the service dimension tells
    // them apart. Were it shared, production's canary-stale would stay OK on staging's ticks.
    const app = new App({ context: NO_BUNDLING });
    const staging = new SluiceStack(app, 'SluiceStaging');
    const production = new SluiceStack(app, 'SluiceProduction');
    const embedding = new Stack(app, 'Platform');
    new Sluice(embedding, 'Events');
    new Sluice(embedding, 'AuditEvents');
    const servicesOf = (template: Template, type: string) =>
      new Set(
        JSON.stringify(template.findResources(type))
          .match(type === 'AWS::Lambda::Function' ? /"POWERTOOLS_SERVICE_NAME":"[^"]*"/g : /"Name":"service","Value":"[^"]*"/g)
          ?.map((match) => match.replace(/^.*:"|"$/g, '')),
      );
    const deployments = [
      ...[staging, production].map((stack) => Template.fromStack(stack)),
      ...['Events', 'AuditEvents'].map((id) => {
        // The two constructs' resources, one after the other, in one template.
        const resources = Template.fromStack(embedding).toJSON().Resources as Record<string, unknown>;
        return Template.fromJSON({
          Resources: Object.fromEntries(Object.entries(resources).filter(([logicalId]) => logicalId.startsWith(id))),
        });
      }),
    ];
    const services = deployments.map((template) => {
      const ofFunctions = servicesOf(template, 'AWS::Lambda::Function');
      expect(ofFunctions.size).toBe(1);
      // The alarms and the dashboard watch the service their own functions emit as.
      expect(servicesOf(template, 'AWS::CloudWatch::Alarm')).toEqual(ofFunctions);
      expect(JSON.stringify(template.findResources('AWS::CloudWatch::Dashboard'))).toContain(`\\"service\\",\\"${[...ofFunctions][0]}\\"`);
      // What its access log counts (throttled requests, 5xx) is its own too.
      const filters = Object.values(template.findResources('AWS::Logs::MetricFilter'));
      expect(filters).toHaveLength(3);
      for (const filter of filters) expect(filter.Properties.FilterPattern).toContain(`$.service = "${[...ofFunctions][0]}"`);
      expect(JSON.stringify(template.findResources('AWS::ApiGateway::Stage'))).toContain(`\\"service\\":\\"${[...ofFunctions][0]}\\"`);
      return [...ofFunctions][0];
    });
    expect(new Set(services).size).toBe(deployments.length);
  });

  it("adds the distributor's and delivery's failed records to their errors alarms: a partial batch response fails no invocation", () => {
    for (const [title, records, fn] of [
      ['distributor function errors', 'DistributorRecordsFailed', 'Distributor'],
      ['delivery function errors', 'DeliveryRecordsFailed', 'Delivery'],
    ] as const) {
      const alarm = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
        String(a.Properties.AlarmDescription).startsWith(`PAGE ${title}`),
      );
      const metrics = (alarm?.Properties.Metrics as Array<{ MetricStat?: { Metric: { Namespace: string; MetricName: string } } }>).flatMap(
        (m) => (m.MetricStat ? [m.MetricStat.Metric] : []),
      );
      expect(metrics.map((m) => `${m.Namespace}/${m.MetricName}`)).toEqual(['AWS/Lambda/Errors', `Sluice/${records}`]);
      expect(JSON.stringify(metrics[0])).toContain(fn);
    }
  });

  it("files a ticket to the on-call topic when an endpoint's deliveries are given times over 15 minutes ahead in each of 5 minutes", () => {
    const alarm = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
      String(a.Properties.AlarmDescription).startsWith('TICKET Endpoint backlog far ahead'),
    );
    const [topicId] = Object.keys(template.findResources('AWS::SNS::Topic', { Properties: { DisplayName: 'sluice on-call' } }));
    expect(alarm?.Properties).toMatchObject({
      MetricName: 'DeliveriesPacedFarAhead',
      Namespace: 'Sluice',
      Statistic: 'Sum',
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
      Period: 60,
      EvaluationPeriods: 5,
      DatapointsToAlarm: 5,
      TreatMissingData: 'notBreaching',
      AlarmActions: [{ Ref: topicId }],
    });
    expect(alarm?.Properties.AlarmDescription).toContain('docs/runbooks.md#endpoint-backlog-far-ahead');
    // Its deployment's own metric, and no webhook, tenant or other dimension beside it.
    expect((alarm?.Properties.Dimensions as Array<{ Name: string }>).map((d) => d.Name)).toEqual(['service']);
  });

  it('pages on a stale canary even when nothing else reports: missing data breaches', () => {
    const alarm = Object.values(template.findResources('AWS::CloudWatch::Alarm')).find((a) =>
      String(a.Properties.AlarmDescription).startsWith('PAGE Canary stale'),
    );
    expect(alarm?.Properties).toMatchObject({
      MetricName: 'CanaryDelivered',
      Namespace: 'Sluice',
      ComparisonOperator: 'LessThanThreshold',
      Period: 300,
      TreatMissingData: 'breaching',
    });
  });

  it('lets the public canary receiver, the canary, the authorizer and the reconciler reach only their own items of the control table', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    const idWhere = (test: (variables: Record<string, unknown>) => boolean) =>
      Object.keys(functions).find((id) => test(functions[id]?.Properties.Environment.Variables ?? {})) as string;
    const urlTarget = Object.values(template.findResources('AWS::Lambda::Url'))[0]?.Properties.TargetFunctionArn['Fn::GetAtt'][0];
    const dynamoStatements = (fnId: string) => {
      const role = functions[fnId]?.Properties.Role['Fn::GetAtt'][0];
      return Object.values(template.findResources('AWS::IAM::Policy'))
        .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === role))
        .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Array<Record<string, unknown>>)
        .filter((st) => JSON.stringify(st.Action).includes('dynamodb:'))
        .map((st) => {
          const condition = st.Condition as Record<string, Record<string, unknown>> | undefined;
          const attributes = condition?.['ForAllValues:StringEquals']?.['dynamodb:Attributes'];
          return {
            action: st.Action,
            leadingKeys: condition?.['ForAllValues:StringLike']?.['dynamodb:LeadingKeys'],
            ...(attributes !== undefined && { attributes, select: condition?.StringEqualsIfExists?.['dynamodb:Select'] }),
          };
        });
    };
    // It reads the canary's item (the webhook's secret) and writes only where it notes the ticks that arrived.
    expect(dynamoStatements(urlTarget)).toEqual([
      { action: 'dynamodb:GetItem', leadingKeys: ['canary'] },
      { action: 'dynamodb:UpdateItem', leadingKeys: ['canary-arrivals'] },
    ]);
    expect(dynamoStatements(idWhere((v) => v.CANARY_RECEIVER_URL !== undefined))).toEqual([
      { action: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'], leadingKeys: ['canary'] },
    ]);
    expect(dynamoStatements(idWhere((v) => v.ADMIN_USAGE_KEY !== undefined))).toEqual([
      // Webhook items (with their signing secrets) share the tenant's partition: only the attributes it reads.
      {
        action: 'dynamodb:GetItem',
        leadingKeys: ['apikey#*', 'tenant#*'],
        attributes: ['pk', 'sk', 'tenant_id', 'id', 'usage_key', 'key_hash', 'deleting_at'],
        select: 'SPECIFIC_ATTRIBUTES',
      },
    ]);
    // The reconciler reads the kill switches and the keys `by_chain` lists (a keys-only
    // index: no webhook's URL or secret), and nothing else of the control table.
    const reconciler = Object.keys(functions).find((id) => id.includes('Reconciler')) as string;
    expect(dynamoStatements(reconciler)).toContainEqual({ action: 'dynamodb:Query', leadingKeys: ['switches'] });
    const unconditioned = statementsOnTable('Reconciler', 'Control').filter((st) => st.Condition === undefined);
    expect(unconditioned.map((st) => [st.Action, JSON.stringify(st.Resource).match(/\/index\/[a-z_]+/g)])).toEqual([
      ['dynamodb:Query', [`/index/${CHAINS_INDEX}`]],
    ]);
    expect(CONTROL_TABLE.indexes.find((index) => index.indexName === CHAINS_INDEX)?.projection).toBe('KEYS_ONLY');
  });

  it("lets the delivery function, which talks to endpoints anyone can set up, reach only its own partitions of the control table: no tenant's API key, no stream, not the canary's item", () => {
    const onControl = statementsOnTable('Delivery', 'Control').map((st) => {
      const condition = st.Condition as Record<string, Record<string, string[]>> | undefined;
      const attributes = condition?.['ForAllValues:StringEquals']?.['dynamodb:Attributes'];
      return {
        action: st.Action,
        leadingKeys: condition?.['ForAllValues:StringLike']?.['dynamodb:LeadingKeys'],
        ...(attributes && { attributes }),
      };
    });
    expect(onControl).toEqual([
      // Webhooks (and their tenant's subscriptions version): read, and their state updated,
      // never put or deleted; not the tenant item's key hash, usage key, limits or deletion mark.
      { action: 'dynamodb:GetItem', leadingKeys: ['tenant#*'] },
      { action: 'dynamodb:UpdateItem', leadingKeys: ['tenant#*'], attributes: [...DELIVERY_WEBHOOK_ATTRIBUTES] },
      // The switches: read.
      { action: 'dynamodb:Query', leadingKeys: ['switches'] },
      // What is kept per webhook.
      {
        action: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
        leadingKeys: ['attempts#*', 'deliveries#*', 'held#*', 'overflow#*', 'dead#*', 'rate#*', 'pace#*'],
      },
    ]);
  });

  it("lets the distributor read of the control table only the attributes it names, not the webhooks' signing secrets", () => {
    const onControl = statementsOnTable('Distributor', 'Control');
    expect(onControl).toHaveLength(1);
    expect(onControl[0]).toMatchObject({
      Action: ['dynamodb:GetItem', 'dynamodb:Query'],
      Condition: {
        'ForAllValues:StringEquals': { 'dynamodb:Attributes': [...DISTRIBUTOR_CONTROL_ATTRIBUTES] },
        StringEqualsIfExists: { 'dynamodb:Select': 'SPECIFIC_ATTRIBUTES' },
      },
    });
    expect(DISTRIBUTOR_CONTROL_ATTRIBUTES).not.toContain('secrets');
    for (const tenantOnly of ['key_hash', 'usage_key', 'limits', 'deleting_at', 'webhook_count', 'secrets']) {
      expect(DELIVERY_WEBHOOK_ATTRIBUTES).not.toContain(tenantOnly);
    }
  });

  it('lets each function query only the indexes its code queries, and use no DynamoDB action its code does not call', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    const tables = template.findResources('AWS::DynamoDB::GlobalTable');
    const tableOf = (name: string) => Object.keys(tables).find((id) => id.includes(name)) as string;
    const statementsOf = (name: string) => {
      const fnId = Object.keys(functions).find((id) => id.includes(name)) as string;
      const role = functions[fnId]?.Properties.Role['Fn::GetAtt'][0];
      return Object.values(template.findResources('AWS::IAM::Policy'))
        .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === role))
        .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Array<{ Action: string | string[]; Resource: unknown }>)
        .filter((st) => JSON.stringify(st.Action).includes('dynamodb:'));
    };
    // Each index a function may reach, as `<table>/index/<name>`.
    const indexesOf = (name: string) =>
      statementsOf(name)
        .flatMap((st) => (Array.isArray(st.Resource) ? st.Resource : [st.Resource]))
        .map((resource) => JSON.stringify(resource))
        .filter((resource) => resource.includes('/index/'))
        .map((resource) => `${resource.includes(tableOf('Events')) ? 'events' : 'control'}/${/\/index\/([^"]+)"/.exec(resource)?.[1]}`);
    expect(indexesOf('Delivery')).toEqual([]);
    expect(indexesOf('Distributor')).toEqual([`control/${BY_RESOURCE_INDEX}`]);
    // Scheduled objects, and the webhooks watched for a lost chain.
    expect(indexesOf('Reconciler').sort()).toEqual([`control/${CHAINS_INDEX}`, `events/${SCHEDULE_INDEX}`]);
    // The API looks for a webhook it just stored or changed in the distributor's index (app/webhooks.ts).
    expect(indexesOf('ApiHandler').sort()).toEqual([`control/${BY_RESOURCE_INDEX}`, `events/${SCHEDULE_INDEX}`]);
    const actions = new Set(
      ['Delivery', 'Distributor', 'Reconciler', 'ApiHandler'].flatMap((name) => statementsOf(name).flatMap((st) => st.Action)),
    );
    for (const action of [
      'dynamodb:Scan',
      'dynamodb:GetRecords',
      'dynamodb:GetShardIterator',
      'dynamodb:ConditionCheckItem',
      'dynamodb:DescribeTable',
    ]) {
      expect(actions.has(action), action).toBe(false);
    }
  });

  it('gives each function on each table exactly the DynamoDB actions its code calls there, nothing more', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    const tables = template.findResources('AWS::DynamoDB::GlobalTable');
    const tableOf = (resource: unknown) => {
      const text = JSON.stringify(resource);
      const id = Object.keys(tables).find((t) => text.includes(t));
      return `${id?.includes('Events') ? 'events' : 'control'}${text.includes('/index/') ? ' index' : ''}`;
    };
    // Every action a function's role allows, as `<table>[ index]: <action>`.
    const allowed = (name: string) => {
      const fnId = Object.keys(functions).find((id) => id.includes(name)) as string;
      const role = functions[fnId]?.Properties.Role['Fn::GetAtt'][0];
      const found = new Set<string>();
      for (const policy of Object.values(template.findResources('AWS::IAM::Policy'))) {
        if (!(policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === role)) continue;
        for (const st of policy.Properties.PolicyDocument.Statement as Array<{ Action: string | string[]; Resource: unknown }>) {
          const actions = (Array.isArray(st.Action) ? st.Action : [st.Action]).filter((a) => a.startsWith('dynamodb:'));
          for (const resource of Array.isArray(st.Resource) ? st.Resource : [st.Resource]) {
            for (const action of actions) found.add(`${tableOf(resource)}: ${action.slice('dynamodb:'.length)}`);
          }
        }
      }
      return [...found].sort();
    };
    const on = (table: string, actions: string[]) => actions.map((a) => `${table}: ${a}`);
    // The reconciler lists scheduled objects (the index), reads their meta items in
    // batches, unlists idle ones and clears stale leases (updates), reads the switches
    // and lists the webhooks watched for a lost chain (an index): it never puts, deletes
    // or batch-writes an item, nor reads or writes a webhook.
    expect(allowed('Reconciler')).toEqual(
      [
        ...on('events', ['BatchGetItem', 'UpdateItem']),
        ...on('events index', ['Query']),
        ...on('control', ['Query']),
        ...on('control index', ['Query']),
      ].sort(),
    );
    // The distributor reads and updates meta items, queries slots, and appends to
    // stream logs (batch writes): it never puts or deletes one item, nor batch-reads.
    expect(allowed('Distributor')).toEqual(
      [
        ...on('events', ['BatchWriteItem', 'GetItem', 'Query', 'UpdateItem']),
        ...on('control', ['GetItem', 'Query']),
        ...on('control index', ['GetItem', 'Query']),
      ].sort(),
    );
    // Nothing batch-reads the control table, and only a webhook's deletion (the API)
    // batch-writes it, removing what was kept for the webhook.
    expect(allowed('Delivery')).toEqual(on('control', ['DeleteItem', 'GetItem', 'PutItem', 'Query', 'UpdateItem']).sort());
    expect(allowed('ApiHandler')).toEqual(
      [
        ...on('events', ['BatchGetItem', 'BatchWriteItem', 'DeleteItem', 'GetItem', 'PutItem', 'Query', 'UpdateItem']),
        ...on('events index', ['Query']),
        ...on('control', ['BatchWriteItem', 'DeleteItem', 'GetItem', 'PutItem', 'Query', 'UpdateItem']),
        ...on('control index', ['Query']),
      ].sort(),
    );
  });

  it('outputs what a deployer needs under the names the README gives them, and nothing the construct adds of its own', () => {
    expect(Object.keys(template.findOutputs('*')).sort()).toEqual([
      'AdminKeySecretArn',
      'ApiUrl',
      'OnCallTopicArn',
      'WebhookDisabledTopicArn',
    ]);
  });

  it("keeps the canary's API key in a secret that only the canary may read and write", () => {
    const functions = template.findResources('AWS::Lambda::Function');
    const secrets = template.findResources('AWS::SecretsManager::Secret');
    const canaryKey = Object.keys(secrets).find((id) => id.includes('CanaryKey')) as string;
    expect(canaryKey).toBeDefined();
    const secretStatements = (fnId: string) => {
      const role = functions[fnId]?.Properties.Role['Fn::GetAtt'][0];
      return Object.values(template.findResources('AWS::IAM::Policy'))
        .filter((policy) => (policy.Properties.Roles as Array<{ Ref: string }>).some((r) => r.Ref === role))
        .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Array<Record<string, unknown>>)
        .filter((st) => JSON.stringify(st.Action).includes('secretsmanager:'));
    };
    const canary = Object.keys(functions).find((id) => functions[id]?.Properties.Environment.Variables.CANARY_RECEIVER_URL) as string;
    expect(functions[canary]?.Properties.Environment.Variables.CANARY_KEY_SECRET_ARN).toEqual({ Ref: canaryKey });
    const onCanaryKey = secretStatements(canary).filter((st) => JSON.stringify(st.Resource) === JSON.stringify({ Ref: canaryKey }));
    expect(onCanaryKey.flatMap((st) => [st.Action].flat()).sort()).toEqual([
      'secretsmanager:GetSecretValue',
      'secretsmanager:PutSecretValue',
    ]);
    // No other function may touch it, the public receiver least of all.
    for (const id of Object.keys(functions).filter((fn) => fn !== canary)) {
      expect(JSON.stringify(secretStatements(id))).not.toContain(canaryKey);
    }
    const urlTarget = Object.values(template.findResources('AWS::Lambda::Url'))[0]?.Properties.TargetFunctionArn['Fn::GetAtt'][0];
    expect(secretStatements(urlTarget)).toEqual([]);
  });

  it('runs the canary on a schedule, with its receiver behind a function URL', () => {
    template.resourceCountIs('AWS::Lambda::Url', 1);
    template.hasResourceProperties('AWS::Lambda::Url', { AuthType: 'NONE' });
    // Both permissions a public function URL needs: lambda:InvokeFunctionUrl alone no longer
    // lets a caller through one made since October 2025, which also needs lambda:InvokeFunction
    // through the URL (https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html).
    const publicPermissions = Object.values(template.findResources('AWS::Lambda::Permission'))
      .filter((permission) => permission.Properties.Principal === '*')
      .map(({ Properties: { FunctionName: _, ...rest } }) => rest);
    expect(publicPermissions).toEqual(
      expect.arrayContaining([
        { Action: 'lambda:InvokeFunctionUrl', FunctionUrlAuthType: 'NONE', Principal: '*' },
        { Action: 'lambda:InvokeFunction', InvokedViaFunctionUrl: true, Principal: '*' },
      ]),
    );
    expect(publicPermissions).toHaveLength(2);
    // Public, so capped: a flood of calls cannot take the account's concurrency.
    const urlTarget = Object.values(template.findResources('AWS::Lambda::Url'))[0]?.Properties.TargetFunctionArn['Fn::GetAtt'][0];
    expect(template.toJSON().Resources[urlTarget].Properties.ReservedConcurrentExecutions).toBe(CANARY_RECEIVER_CONCURRENCY);
    const canary = Object.values(template.findResources('AWS::Lambda::Function')).find(
      (fn) => fn.Properties.Environment.Variables.CANARY_RECEIVER_URL !== undefined,
    );
    expect(canary?.Properties.Environment.Variables.API_URL).toBeDefined();
  });

  it('says in the function-throttles runbook what a throttle means for each function that reserves its concurrency', () => {
    const stack = new SluiceStack(new App({ context: NO_BUNDLING }), 'Sluice');
    const resources = Template.fromStack(stack).toJSON().Resources;
    const section = readFileSync('docs/runbooks.md', 'utf8')
      .split(/^## /m)
      .find((s) => s.startsWith('function-throttles\n'));
    const reserving = Object.entries(stack.sluice.functions).filter(
      ([, fn]) => resources[stack.getLogicalId(fn.node.defaultChild as CfnElement)].Properties.ReservedConcurrentExecutions !== undefined,
    );
    expect(reserving.map(([name]) => name).sort()).toEqual(['canary', 'canaryReceiver', 'reconciler']);
    for (const [name] of reserving) expect(section, name).toContain(`\`${name}-throttles\``);
  });

  it('has, for each logical id start the runbooks look a resource up by, exactly one resource of the Sluice stack', () => {
    const resources = Template.fromStack(new SluiceStack(new App({ context: NO_BUNDLING }), 'Sluice')).toJSON().Resources as Record<
      string,
      { Type: string }
    >;
    const runbooks = readFileSync('docs/runbooks.md', 'utf8');
    // The table's rows and the commands' examples: `SluiceApiHandlerLogs`, 'SluiceApiHandlerLogs',
    // and a function's, which names its type too (its event-invoke settings start alike).
    const lookups = [
      ...runbooks.matchAll(/\| `(Sluice\w+)`|(?:ResourceType=='([\w:]+)' && )?starts_with\(LogicalResourceId, '(Sluice\w+)'\)/g),
    ].map((m) => ({ prefix: (m[1] ?? m[3]) as string, type: m[2] }));
    expect(lookups.length).toBeGreaterThan(10);
    expect(lookups).toContainEqual({ prefix: 'SluicePipelineReconcilerFunction', type: 'AWS::Lambda::Function' });
    for (const { prefix, type } of lookups.filter((l) => l.prefix !== 'SluiceOperationsAlarm')) {
      expect(
        Object.entries(resources).filter(([id, resource]) => id.startsWith(prefix) && (type === undefined || resource.Type === type)),
        prefix,
      ).toHaveLength(1);
    }
    // Each alarm by its name without dashes.
    for (const alarm of alarmDefinitions(buildConfig())) {
      const ids = Object.keys(resources).filter((id) => id.startsWith(`SluiceOperationsAlarm${alarm.name.replaceAll('-', '')}`));
      expect(ids, alarm.name).toHaveLength(1);
      expect(resources[ids[0] as string]?.Type).toBe('AWS::CloudWatch::Alarm');
    }
  });

  it('keeps the logical ids of everything that holds state, so a deploy of a new version updates it in place', () => {
    // CloudFormation replaces a resource whose logical id changes: renaming or moving a
    // construct would make new tables (the old ones, retained, left orphaned with every
    // tenant, webhook and queued event), new queues (the old ones' doorbells and
    // deliveries never read again), a new API (every tenant's key and usage plan, which
    // sluice makes at run time on the old one's stage, no longer admitted), new topics
    // (the pager's and the owners' subscriptions gone) and new secrets (a new admin key).
    // A change here needs a migration written down in README's Deploy section first.
    const resources = Template.fromStack(new SluiceStack(new App({ context: NO_BUNDLING }), 'Sluice')).toJSON().Resources as Record<
      string,
      { Type: string }
    >;
    const stateful = [
      'AWS::DynamoDB::GlobalTable',
      'AWS::SQS::Queue',
      'AWS::SNS::Topic',
      'AWS::KMS::Key',
      'AWS::SecretsManager::Secret',
      'AWS::ApiGateway::RestApi',
      'AWS::ApiGateway::Stage',
      'AWS::ApiGateway::ApiKey',
      'AWS::ApiGateway::UsagePlan',
      'AWS::Lambda::Url',
    ];
    const ids = Object.entries(resources)
      .filter(([, resource]) => stateful.includes(resource.Type))
      .map(([id, resource]) => `${resource.Type} ${id}`)
      .sort();
    expect(ids).toEqual([
      'AWS::ApiGateway::ApiKey SluiceApiAdminUsageKey61912818',
      'AWS::ApiGateway::RestApi SluiceApiRestF5DD7016',
      'AWS::ApiGateway::Stage SluiceApiRestDeploymentStagelive15464C1C',
      'AWS::ApiGateway::UsagePlan SluiceApiRestAdminPlan92D535FF',
      'AWS::DynamoDB::GlobalTable SluiceStorageControl7BEE3382',
      'AWS::DynamoDB::GlobalTable SluiceStorageEventsCAC8A578',
      'AWS::KMS::Key SluiceOperationsOnCallKey28C2807A',
      'AWS::Lambda::Url SluiceOperationsCanaryReceiverFunctionFunctionUrl9C55DC22',
      'AWS::SNS::Topic SluiceDeliveryWebhookDisabled7B6B0E65',
      'AWS::SNS::Topic SluiceOperationsOnCallD62B8FB0',
      'AWS::SQS::Queue SluiceDeliveryDeliverDeadLettersC85BFC8B',
      'AWS::SQS::Queue SluiceDeliveryDeliverQueue393E6059',
      'AWS::SQS::Queue SluicePipelineDistributeBulkDeadLetters54E4A8E2',
      'AWS::SQS::Queue SluicePipelineDistributeBulkQueueF5C00978',
      'AWS::SQS::Queue SluicePipelineDistributeDeadLetters5D4CA27A',
      'AWS::SQS::Queue SluicePipelineDistributeQueueCB5AF621',
      'AWS::SecretsManager::Secret SluiceApiAdminKey141705D9',
      'AWS::SecretsManager::Secret SluiceOperationsCanaryKey9EBDB68F',
    ]);
  });

  it('has one dashboard, the pipeline left to right', () => {
    const dashboards = Object.values(template.findResources('AWS::CloudWatch::Dashboard'));
    expect(dashboards).toHaveLength(1);
    const body = JSON.stringify(dashboards[0]?.Properties.DashboardBody);
    const order = ['Ingest', 'Per-object queues', 'Distribute', 'Deliver', 'Endpoint health', 'Dead letters and canary'].map((t) =>
      body.indexOf(t),
    );
    expect(order.every((i) => i >= 0)).toBe(true);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    // Deliveries waiting on an endpoint's rate, a failing endpoint or a tenant's failing endpoints.
    expect(body).toContain('DeliveriesDelayed');
  });

  it("draws every graph's metrics on one period, a minute: AWS's own (API Gateway, SQS) as sluice's", () => {
    const dashboard = Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0];
    const parts = dashboard?.Properties.DashboardBody['Fn::Join'][1] as unknown[];
    // Tokens (queue names, the API's name) stand in as one string each.
    const body = JSON.parse(parts.map((part) => (typeof part === 'string' ? part : 'X')).join(''));
    const graphs = (body.widgets as Array<{ type: string; properties: { title?: string; period?: number } }>).filter(
      (widget) => widget.type === 'metric',
    );
    expect(graphs.length).toBeGreaterThan(0);
    for (const graph of graphs) expect(graph.properties.period, graph.properties.title).toBe(60);
  });
});
