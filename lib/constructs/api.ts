/**
 * The HTTP API: a REST API whose every route but the health check goes through a
 * TOKEN Lambda authorizer, with API keys taken from the authorizer
 * (`usageIdentifierKey`) so that each tenant's usage plan throttles it. Gateway
 * errors are shaped like sluice's own (`{"error":{"code","message"}}`).
 */
import { Aws, Duration, Names, RemovalPolicy, Token } from 'aws-cdk-lib';
import {
  AccessLogField,
  AccessLogFormat,
  ApiKey,
  ApiKeySourceType,
  LambdaIntegration,
  LogGroupLogDestination,
  MethodLoggingLevel,
  ResponseType,
  RestApi,
  TokenAuthorizer,
} from 'aws-cdk-lib/aws-apigateway';
import type { TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { FilterPattern, LogGroup, MetricFilter, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { SluiceConfig } from '../../functions/core/config.ts';
import { AUTHORIZATION_HEADER_PATTERN } from '../../functions/core/keys.ts';
import {
  API_SERVER_ERRORS_METRIC,
  METRICS_NAMESPACE,
  REQUESTS_TOO_LARGE_METRIC,
  THROTTLED_REQUESTS_METRIC,
} from '../../functions/definitions/alarms.ts';
import {
  API_STAGE_NAME,
  API_TIMEOUT_SECONDS,
  AUTHORIZER_CACHE_SECONDS,
  ENV,
  FUNCTION_ENTRIES,
} from '../../functions/definitions/environment.ts';
import { API_BINARY_MEDIA_TYPES, GATEWAY_MESSAGES } from '../../functions/definitions/gateway.ts';
import { TABLE_ACCESS } from '../../functions/definitions/tables.ts';
import { acknowledgeNag } from './nag.ts';
import { SluiceFunction } from './sluice-function.ts';

export interface ApiProps {
  readonly config: SluiceConfig;
  readonly metricsService: string;
  readonly events: TableV2;
  readonly control: TableV2;
  readonly distributeQueue: IQueue;
  /** The doorbells' bulk lane (functions/core/lanes.ts). */
  readonly distributeBulkQueue: IQueue;
  /** For replay and re-enabling (which releases held deliveries). */
  readonly deliverQueue: IQueue;
  /** Whether to set API Gateway's account-wide CloudWatch role (see `SluiceProps.apiGatewayCloudWatchRole`). */
  readonly cloudWatchRole: boolean;
}

/** The public health check (SPEC §3), and the rate that keeps it from costing more than a check needs. */
const HEALTH_PATH = 'v1/health';
const HEALTH_RATE_PER_SECOND = 10;
/** The health check's methods, public: GET, and HEAD for uptime checks. */
const HEALTH_METHODS = ['GET', 'HEAD'] as const;

/**
 * The access log's line: API Gateway's standard fields, plus why API Gateway answered
 * itself (`responseType`, THROTTLED for a key's or the account's throttle), who the
 * authorizer said was calling (`tenant`: a tenant's id, `admin` or `anonymous`), what
 * Lambda itself answered API Gateway's invoke (`integrationStatus`, `integrationError`: a
 * body too large for Lambda's 6 MB invoke limit gets a 500 from API Gateway without reaching the
 * API function) and the deployment, as its metrics name it (`service`), for the metric
 * filter's dimension.
 */
function accessLogFormat(metricsService: string): AccessLogFormat {
  // The format is a template of $context variables: a '$' in the value would be read as one.
  if (!Token.isUnresolved(metricsService) && /[$"\\]/.test(metricsService)) {
    throw new Error(`The metrics service name ${metricsService} cannot go in the API's access log: it holds $, " or \\.`);
  }
  return AccessLogFormat.custom(
    JSON.stringify({
      requestId: AccessLogField.contextRequestId(),
      ip: AccessLogField.contextIdentitySourceIp(),
      requestTime: AccessLogField.contextRequestTime(),
      httpMethod: AccessLogField.contextHttpMethod(),
      resourcePath: AccessLogField.contextResourcePath(),
      status: AccessLogField.contextStatus(),
      protocol: AccessLogField.contextProtocol(),
      responseLength: AccessLogField.contextResponseLength(),
      responseType: AccessLogField.contextErrorResponseType(),
      integrationStatus: AccessLogField.contextIntegrationStatus(),
      integrationError: AccessLogField.contextIntegrationErrorMessage(),
      tenant: AccessLogField.contextAuthorizerPrincipalId(),
      service: metricsService,
    }),
  );
}

/**
 * API Gateway's own answers, in sluice's error shape: [type, status, code, message]. The two defaults give the
 * shape to every other type and keep each type's own status (a status set on them
 * would turn, say, an integration timeout's 504 into a 500).
 */
const GATEWAY_ERRORS: ReadonlyArray<[ResponseType, string | undefined, string, string]> = [
  [ResponseType.UNAUTHORIZED, '401', 'unauthorized', GATEWAY_MESSAGES.unauthorized],
  // The authorizer refuses a bad key with a Deny policy (functions/authorizer/process.ts).
  [ResponseType.ACCESS_DENIED, '401', 'unauthorized', GATEWAY_MESSAGES.unauthorized],
  [ResponseType.INVALID_API_KEY, '403', 'forbidden', GATEWAY_MESSAGES.noUsagePlan],
  [ResponseType.MISSING_AUTHENTICATION_TOKEN, '404', 'not_found', 'There is no such route.'],
  [ResponseType.THROTTLED, '429', 'rate_limited', GATEWAY_MESSAGES.throttled],
  [ResponseType.QUOTA_EXCEEDED, '429', 'rate_limited', 'This key has used its quota; slow down.'],
  [ResponseType.REQUEST_TOO_LARGE, '413', 'payload_too_large', 'The body is too large.'],
  [ResponseType.DEFAULT_4XX, undefined, 'invalid_request', 'The request could not be accepted.'],
  [ResponseType.DEFAULT_5XX, undefined, 'internal', 'Something went wrong on our side; try again.'],
];

export class Api extends Construct {
  readonly restApi: RestApi;
  readonly apiFunction: SluiceFunction;
  readonly authorizerFunction: SluiceFunction;
  /** Its JSON field `token`, prefixed with `ak_`, is the admin key. */
  readonly adminKeySecret: Secret;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    const { config } = props;

    this.adminKeySecret = new Secret(this, 'AdminKey', {
      description: 'sluice admin key: ak_ followed by the token field',
      generateSecretString: { secretStringTemplate: '{}', generateStringKey: 'token', excludePunctuation: true, passwordLength: 48 },
    });
    acknowledgeNag(
      this.adminKeySecret,
      'AwsSolutions-SMG4',
      'The admin key is rotated by the operator (a new secret value, read again by every function within 5 minutes), since every admin client must be given the new key.',
    );

    const accessLogs = new LogGroup(this, 'AccessLogs', {
      retention: RetentionDays.ONE_MONTH,
      // Request logs are operational, not customer data: they go with the stack, like the functions' logs.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // No stage-wide throttle: a stage (method) limit is shared by every client, so a
    // tenant-sized one would let one tenant's burst throttle all the others. Each
    // tenant's own usage plan (selected by the key the authorizer returns) is the limit;
    // the account's regional limit is the ceiling.
    this.restApi = new RestApi(this, 'Rest', {
      // Unique in the account and region: the dashboard selects the API's metrics by
      // this name, and would add in another API's that had the same one.
      restApiName: Names.uniqueResourceName(this, { maxLength: 128 }),
      description: 'sluice: events in, webhooks out',
      apiKeySourceType: ApiKeySourceType.AUTHORIZER,
      // Every body reaches the API function as its bytes (base64, which hono/aws-lambda
      // decodes), so that one not in UTF-8 is refused (400) as in the sandbox. As text,
      // API Gateway would decode it itself, each byte it cannot read made U+FFFD: accepted
      // and delivered so (a Windows-1252 "café" as "caf\uFFFD").
      binaryMediaTypes: [...API_BINARY_MEDIA_TYPES],
      cloudWatchRole: props.cloudWatchRole,
      deployOptions: {
        stageName: API_STAGE_NAME,
        accessLogDestination: new LogGroupLogDestination(accessLogs),
        accessLogFormat: accessLogFormat(props.metricsService),
        loggingLevel: MethodLoggingLevel.ERROR,
        metricsEnabled: true,
        tracingEnabled: true,
        // The one public method invokes the API function with no key and no usage plan:
        // a throttle of its own keeps anonymous traffic from using the account's concurrency.
        methodOptions: Object.fromEntries(
          HEALTH_METHODS.map((method) => [
            `/${HEALTH_PATH}/${method}`,
            {
              throttlingRateLimit: HEALTH_RATE_PER_SECOND,
              throttlingBurstLimit: 2 * HEALTH_RATE_PER_SECOND,
              loggingLevel: MethodLoggingLevel.ERROR,
              metricsEnabled: true,
            },
          ]),
        ),
      },
    });

    // API Gateway refuses a throttled key before the API's Lambda, so no function counts
    // those requests: the access log does (events-rejected-or-dropped adds them in).
    new MetricFilter(this, 'ThrottledRequests', {
      logGroup: accessLogs,
      filterPattern: FilterPattern.all(
        FilterPattern.stringValue('$.responseType', '=', 'THROTTLED'),
        // The health check's own throttle keeps anonymous traffic down: nobody's events.
        FilterPattern.stringValue('$.resourcePath', '!=', `/${HEALTH_PATH}`),
        FilterPattern.stringValue('$.service', '=', props.metricsService),
      ),
      metricNamespace: METRICS_NAMESPACE,
      metricName: THROTTLED_REQUESTS_METRIC,
      metricValue: '1',
      dimensions: { service: '$.service' },
    });

    // What Lambda refused to invoke the API function with as too large (its 413 in the
    // access log's integrationStatus; API Gateway answers the client 500) is a producer's
    // mistake: counted apart, and left out of the 5xx that page (ingest-5xx).
    const invokeTooLarge = FilterPattern.stringValue('$.integrationStatus', '=', '413');
    const serverError = FilterPattern.regexValue('$.status', '=', '5[0-9][0-9]');
    const ofThisApi = FilterPattern.stringValue('$.service', '=', props.metricsService);
    new MetricFilter(this, 'ServerErrors', {
      logGroup: accessLogs,
      filterPattern: FilterPattern.all(serverError, FilterPattern.stringValue('$.integrationStatus', '!=', '413'), ofThisApi),
      metricNamespace: METRICS_NAMESPACE,
      metricName: API_SERVER_ERRORS_METRIC,
      metricValue: '1',
      dimensions: { service: '$.service' },
    });
    new MetricFilter(this, 'TooLargeRequests', {
      logGroup: accessLogs,
      filterPattern: FilterPattern.all(serverError, invokeTooLarge, ofThisApi),
      metricNamespace: METRICS_NAMESPACE,
      metricName: REQUESTS_TOO_LARGE_METRIC,
      metricValue: '1',
      dimensions: { service: '$.service' },
    });

    // The construct adds no stack outputs of its own (RestApi makes one, `Endpoint`):
    // the stack that uses it names its outputs.
    this.restApi.node.tryRemoveChild('Endpoint');

    // API Gateway writes its execution logs (loggingLevel ERROR) to a group it would make
    // itself, kept forever and left behind: made here first, with a retention, it goes
    // with the stack. The stage, whose first error would make it, waits for it.
    const executionLogs = new LogGroup(this, 'ExecutionLogs', {
      logGroupName: `API-Gateway-Execution-Logs_${this.restApi.restApiId}/${API_STAGE_NAME}`,
      retention: RetentionDays.ONE_MONTH,
      // Operational logs, like the functions' and the access logs.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.restApi.deploymentStage.node.addDependency(executionLogs);

    this.apiFunction = new SluiceFunction(this, 'Handler', {
      entry: FUNCTION_ENTRIES.api,
      config,
      metricsService: props.metricsService,
      timeout: Duration.seconds(API_TIMEOUT_SECONDS),
    })
      .bindTable(props.events, TABLE_ACCESS.api.events, ENV.eventsTable)
      .bindTable(props.control, TABLE_ACCESS.api.control, ENV.controlTable)
      .bindQueue(props.distributeQueue, ENV.distributeQueueUrl)
      .bindQueue(props.distributeBulkQueue, ENV.distributeBulkQueueUrl)
      .bindQueue(props.deliverQueue, ENV.deliverQueueUrl);
    const fn = this.apiFunction.function;
    fn.addEnvironment(ENV.restApiId, this.restApi.restApiId);
    fn.addEnvironment(ENV.apiStage, API_STAGE_NAME);
    // Tenant creation gives each tenant an API key in a usage plan of its own.
    const apigatewayArn = (path: string) => `arn:${Aws.PARTITION}:apigateway:${Aws.REGION}::${path}`;
    fn.addToRolePolicy(
      new PolicyStatement({
        actions: ['apigateway:POST'],
        resources: [apigatewayArn('/apikeys'), apigatewayArn('/usageplans'), apigatewayArn('/usageplans/*/keys')],
      }),
    );
    fn.addToRolePolicy(
      new PolicyStatement({ actions: ['apigateway:DELETE'], resources: [apigatewayArn('/apikeys/*'), apigatewayArn('/usageplans/*')] }),
    );
    // A creation whose answer was lost and sent again may have made a plan: listed (GET) to remove it.
    fn.addToRolePolicy(new PolicyStatement({ actions: ['apigateway:GET'], resources: [apigatewayArn('/usageplans')] }));
    // Undoing a tenant whose creation failed: a usage plan's stage is removed (PATCH) before the plan.
    fn.addToRolePolicy(new PolicyStatement({ actions: ['apigateway:PATCH'], resources: [apigatewayArn('/usageplans/*')] }));
    for (const path of ['/usageplans/*/keys', '/apikeys/*', '/usageplans/*']) {
      acknowledgeNag(
        this.apiFunction,
        `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:apigateway:<AWS::Region>::${path}]`,
        'Usage plans and API keys are created per tenant at run time, so their ids cannot be named in advance.',
      );
    }

    // The admin's own usage plan. Its key value is not a secret: the authorizer
    // authenticates; this key only selects the admin's throttle. API Gateway refuses a key
    // value that another key of the account and region has (409), so it names the stack by
    // its name, as the API's name does: two deployments of one app under two stack names
    // (staging and production) have the same construct paths. For a stack named as its
    // construct (`Sluice`), the value is the one its path alone gave.
    const adminUsageKeyValue = `sluice-admin-${Names.uniqueResourceName(this, { maxLength: 115 })}`.padEnd(20, '0').slice(0, 128);
    const adminApiKey = new ApiKey(this, 'AdminUsageKey', { value: adminUsageKeyValue, description: 'Selects the admin usage plan' });
    const adminPlan = this.restApi.addUsagePlan('AdminPlan', {
      description: 'Throttle for requests made with the admin key',
      // The admin gets a tenant's default throttle: enough for operations, never the whole API.
      throttle: { rateLimit: config.tenantRatePerSecond, burstLimit: config.tenantBurst },
      apiStages: [{ api: this.restApi, stage: this.restApi.deploymentStage }],
    });
    adminPlan.addApiKey(adminApiKey);

    this.authorizerFunction = new SluiceFunction(this, 'Authorizer', {
      entry: FUNCTION_ENTRIES.authorizer,
      config,
      metricsService: props.metricsService,
      timeout: Duration.seconds(10),
      // A key's item, then its tenant's: reads by key, never a query or a scan, and
      // of the few attributes it needs (not the webhooks' secrets in the tenant's partition).
    })
      .bindItems(props.control, ENV.controlTable, TABLE_ACCESS.authorizer.control)
      .bindSecret(this.adminKeySecret, ENV.adminKeySecretArn);
    this.authorizerFunction.function.addEnvironment(ENV.adminUsageKey, adminUsageKeyValue);
    const authorizer = new TokenAuthorizer(this, 'TokenAuthorizer', {
      handler: this.authorizerFunction.function,
      identitySource: 'method.request.header.Authorization',
      // A header that cannot hold a key is refused (401) without invoking the authorizer.
      validationRegex: AUTHORIZATION_HEADER_PATTERN,
      resultsCacheTtl: Duration.seconds(AUTHORIZER_CACHE_SECONDS),
    });
    // A change of the authorizer reaches the stage only with a new deployment: its settings
    // are part of the deployment's identity (as the feature flag authorizerChangeDeploymentLogicalId,
    // set in cdk.json, makes them; an app that embeds this construct may not set it).
    // The binary media types too: a stage takes them only from a new deployment.
    this.restApi.latestDeployment?.addToLogicalId({
      binaryMediaTypes: API_BINARY_MEDIA_TYPES,
      authorizer: {
        identitySource: 'method.request.header.Authorization',
        validationRegex: AUTHORIZATION_HEADER_PATTERN,
        cacheSeconds: AUTHORIZER_CACHE_SECONDS,
        handler: this.authorizerFunction.function.functionArn,
      },
    });

    const integration = new LambdaIntegration(fn);
    // HEAD too, for uptime checks: API Gateway answers no method it is not given, and a
    // HEAD elsewhere would reach the API's function only through the authorizer.
    const healthResource = this.restApi.root.resourceForPath(HEALTH_PATH);
    for (const method of HEALTH_METHODS) {
      const health = healthResource.addMethod(method, integration);
      acknowledgeNag(health, 'AwsSolutions-APIG4', 'The health check is public by design (SPEC §3).');
      acknowledgeNag(health, 'AwsSolutions-COG4', 'The health check is public by design (SPEC §3).');
    }
    // Every other path, only through the authorizer and a usage plan. The root has no
    // method, so `/` answers 404 like any unknown route.
    this.restApi.root.addResource('{proxy+}').addMethod('ANY', integration, { authorizer, apiKeyRequired: true });

    for (const [type, statusCode, code, message] of GATEWAY_ERRORS) {
      this.restApi.addGatewayResponse(`Error${code}${statusCode ?? ''}${type.responseType}`, {
        type,
        ...(statusCode !== undefined && { statusCode }),
        templates: { 'application/json': JSON.stringify({ error: { code, message } }) },
        ...(statusCode === '429' && { responseHeaders: { 'Retry-After': "'1'" } }),
      });
    }

    for (const [id, reason] of [
      ['AwsSolutions-APIG2', 'Requests are validated in the API function, which answers every problem in sluice’s own error shape.'],
      ['AwsSolutions-APIG3', 'WAF is the deployer’s choice; per-tenant usage plans and per-object limits already bound abuse.'],
      ['AwsSolutions-COG4', 'Tenants authenticate with sluice API keys through a Lambda authorizer, not Cognito (SPEC §3).'],
    ] as const) {
      acknowledgeNag(this.restApi, id, reason);
    }
  }
}
