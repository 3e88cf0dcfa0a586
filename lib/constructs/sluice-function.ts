/**
 * One construct that owns every Lambda default of sluice: Node.js 24 on arm64,
 * bundled by esbuild as ESM with source maps, an explicit log group with
 * retention, Powertools settings and the whole config. `bindTable`, `bindItems`,
 * `bindQueue` and `bindSecret` grant access and set the environment variable in one call.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type { TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, LoggingFormat, RecursiveLoop, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { ISecret } from 'aws-cdk-lib/aws-secretsmanager';
import type { ITopic } from 'aws-cdk-lib/aws-sns';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { CONFIG_ENV, type SluiceConfig } from '../../functions/core/config.ts';
import { METRICS_NAMESPACE } from '../../functions/definitions/alarms.ts';
import { FUNCTION_MEMORY_MB } from '../../functions/definitions/environment.ts';
import { grantsOf, type TableAccess, type TableGrant } from '../../functions/definitions/tables.ts';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface SluiceFunctionProps {
  /** Entry file, relative to the repository root (see functions/definitions/environment.ts). */
  readonly entry: string;
  readonly config: SluiceConfig;
  /** The `service` dimension of its metrics: the deployment's own (Sluice `metricsService`). */
  readonly metricsService: string;
  /** @default 30 seconds */
  readonly timeout?: Duration;
  /** @default FUNCTION_MEMORY_MB (512) */
  readonly memorySize?: number;
  /** @default one month */
  readonly logRetention?: RetentionDays;
  /** Caps this function's concurrency. @default no reserved concurrency */
  readonly reservedConcurrentExecutions?: number;
  /**
   * The function sends to a queue that invokes it: a turn rings its object again, a
   * delivery's retry, probe, release or wait past 15 minutes goes round the deliver queue.
   * Lambda's recursive loop detection, on by default, counts one message's lineage through
   * such a loop and stops it at the 17th invocation, moving the message to the dead-letter
   * queue (https://docs.aws.amazon.com/lambda/latest/dg/invocation-recursion.html); the
   * sandbox has no such thing. sluice's own bounds end each chain (a turn goes idle, a
   * schedule runs out), so Lambda is told to let them run.
   * @default false (Lambda's default: such a chain is stopped)
   */
  readonly sendsToItsOwnQueue?: boolean;
}

/**
 * Conditions that let a request read only these attributes: each must name them (a
 * request without a projection asks for all attributes, Select ALL_ATTRIBUTES, and is refused).
 */
function onlyTheseAttributes(attributes: readonly string[]) {
  return {
    'ForAllValues:StringEquals': { 'dynamodb:Attributes': [...attributes] },
    StringEqualsIfExists: { 'dynamodb:Select': 'SPECIFIC_ATTRIBUTES' },
  };
}

const dynamoActions = (access: Pick<TableAccess, 'actions'>) => access.actions.map((action) => `dynamodb:${action}`);

export class SluiceFunction extends Construct {
  readonly function: NodejsFunction;
  readonly logGroup: LogGroup;

  constructor(scope: Construct, id: string, props: SluiceFunctionProps) {
    super(scope, id);
    this.logGroup = new LogGroup(this, 'Logs', {
      retention: props.logRetention ?? RetentionDays.ONE_MONTH,
      // Logs are operational, not customer data: they go with the stack.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // A role of its own rather than NodejsFunction's, which carries the AWS managed
    // AWSLambdaBasicExecutionRole: its log permissions cover every log group in the
    // account. This one may write to the function's own group only (which exists, so
    // no logs:CreateLogGroup).
    const role = new Role(this, 'Role', { assumedBy: new ServicePrincipal('lambda.amazonaws.com') });
    this.logGroup.grantWrite(role);
    this.function = new NodejsFunction(this, 'Function', {
      role,
      entry: join(REPO_ROOT, props.entry),
      projectRoot: REPO_ROOT,
      depsLockFilePath: join(REPO_ROOT, 'package-lock.json'),
      handler: 'handler',
      runtime: Runtime.NODEJS_24_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize ?? FUNCTION_MEMORY_MB,
      timeout: props.timeout ?? Duration.seconds(30),
      logGroup: this.logGroup,
      loggingFormat: LoggingFormat.JSON,
      ...(props.reservedConcurrentExecutions !== undefined && { reservedConcurrentExecutions: props.reservedConcurrentExecutions }),
      ...(props.sendsToItsOwnQueue && { recursiveLoop: RecursiveLoop.ALLOW }),
      environment: {
        [CONFIG_ENV]: JSON.stringify(props.config),
        NODE_OPTIONS: '--enable-source-maps',
        // One service name for every function of a deployment: its alarms watch metrics by {service}.
        POWERTOOLS_SERVICE_NAME: props.metricsService,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        POWERTOOLS_LOG_LEVEL: 'INFO',
      },
      bundling: {
        format: OutputFormat.ESM,
        target: 'node24',
        minify: true,
        sourceMap: true,
        // The AWS SDK goes into the bundle too: the functions run the SDK of the lockfile,
        // which the tests ran, not whichever one the Lambda runtime ships that month (CDK
        // leaves @aws-sdk/* out by default). One minified file loads no slower than the
        // runtime's many: the bundles stay under 750 KB (test/integration/bundles.test.ts).
        externalModules: [],
        mainFields: ['module', 'main'],
        // Some dependencies still call require(); give ESM output one.
        banner: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
      },
    });
  }

  /**
   * The item operations the function's code calls on the table (functions/definitions/
   * tables.ts TABLE_ACCESS), and Query on the indexes it queries: no other action, and
   * no index a function does not query; where the access names leading keys, only on
   * items whose partition key matches one of them, and where it names attributes, only
   * those (a write that names another is refused).
   */
  bindTable(table: TableV2, grant: TableGrant, envName: string): this {
    // One statement per grant: a grant's actions only on its own partitions.
    for (const access of grantsOf(grant)) {
      if (access.attributes && access.indexes) throw new Error('A grant of only some attributes of an index goes through bindAttributes.');
      const keys = access.leadingKeys && { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [...access.leadingKeys] } };
      const conditions = (keys || access.attributes) && { ...keys, ...(access.attributes && onlyTheseAttributes(access.attributes)) };
      // A grant of an index alone (a keys-only one) allows nothing on the table's items.
      if (access.actions.length > 0) {
        this.function.addToRolePolicy(
          new PolicyStatement({ actions: dynamoActions(access), resources: [table.tableArn], ...(conditions && { conditions }) }),
        );
      }
      if (access.indexes && access.indexes.length > 0) {
        this.function.addToRolePolicy(
          new PolicyStatement({
            actions: ['dynamodb:Query'],
            resources: access.indexes.map((index) => `${table.tableArn}/index/${index}`),
            ...(conditions && { conditions }),
          }),
        );
      }
    }
    this.function.addEnvironment(envName, table.tableName);
    return this;
  }

  /**
   * Only these item operations, and only on items whose partition key matches one of
   * `leadingKeys` (`*` matches any characters): no Scan, no index. For a
   * function that reads a few known items of the control table, which also holds
   * every tenant's webhook signing secrets: `bindTable`'s statement, whose leading keys
   * this one's type requires.
   */
  bindItems(
    table: TableV2,
    envName: string,
    access: Pick<TableAccess, 'actions' | 'attributes'> & { readonly leadingKeys: readonly string[] },
  ): this {
    return this.bindTable(table, access, envName);
  }

  /**
   * Its item operations on the table and the named indexes, of only these attributes,
   * which every request must name in a projection: for a function that reads items
   * whose other attributes it must not see (the control table's webhook items hold
   * signing secrets, projected into its index too).
   */
  bindAttributes(table: TableV2, envName: string, access: TableAccess & { readonly attributes: readonly string[] }): this {
    this.function.addToRolePolicy(
      new PolicyStatement({
        actions: dynamoActions(access),
        resources: [table.tableArn, ...(access.indexes ?? []).map((index) => `${table.tableArn}/index/${index}`)],
        conditions: onlyTheseAttributes(access.attributes),
      }),
    );
    this.function.addEnvironment(envName, table.tableName);
    return this;
  }

  /**
   * sns:Publish on the topic, and nothing of its key: the topics sluice publishes to are
   * encrypted with the AWS-managed SNS key, whose own policy lets SNS use it for any
   * caller in the account. `grantPublish` would add KMS actions through the imported
   * alias: none by default, but with CDK's recommended flag
   * @aws-cdk/aws-kms:applyImportedAliasPermissionsToPrincipal (an app `cdk init` made)
   * on every key of the account whose alias is alias/aws/sns, which cdk-nag refuses.
   */
  bindTopic(topic: ITopic, envName: string): this {
    this.function.addToRolePolicy(new PolicyStatement({ actions: ['sns:Publish'], resources: [topic.topicArn] }));
    this.function.addEnvironment(envName, topic.topicArn);
    return this;
  }

  /**
   * Sends to the queue (SendMessage and SendMessageBatch, both `sqs:SendMessage`), by the
   * URL the environment gives: not CDK's grantSendMessages, which adds GetQueueAttributes
   * and GetQueueUrl, which no code calls. The queues are encrypted with SQS's own key, so
   * no KMS permission is needed.
   */
  bindQueue(queue: IQueue, envName: string): this {
    this.function.addToRolePolicy(new PolicyStatement({ actions: ['sqs:SendMessage'], resources: [queue.queueArn] }));
    this.function.addEnvironment(envName, queue.queueUrl);
    return this;
  }

  /**
   * Reads the secret's value (and, with `write`, puts a new one), by the ARN the
   * environment gives: not CDK's grantRead, which adds DescribeSecret, which no code
   * calls. The secrets are encrypted with Secrets Manager's own key (no KMS grant).
   */
  bindSecret(secret: ISecret, envName: string, options: { readonly write?: boolean } = {}): this {
    const actions = ['secretsmanager:GetSecretValue', ...(options.write ? ['secretsmanager:PutSecretValue'] : [])];
    this.function.addToRolePolicy(new PolicyStatement({ actions, resources: [secret.secretArn] }));
    this.function.addEnvironment(envName, secret.secretArn);
    return this;
  }
}
