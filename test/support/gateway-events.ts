/**
 * Requests as API Gateway (REST API, Lambda proxy integration) hands them to the API
 * function: the resource they matched, the `path` as the client sent it after the stage
 * (behind a custom domain, from the base path on), query values decoded
 * (each repeated one in `multiValueQueryStringParameters`), every header in `headers`
 * and `multiValueHeaders`, the authorizer's context as strings beside its principalId,
 * and the body as the RestApi's binary media types have it passed: its bytes in base64,
 * or text that API Gateway decoded as UTF-8, each byte it could not read made U+FFFD.
 */
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { LambdaEvent } from 'hono/aws-lambda';
import { API_STAGE_NAME } from '../../functions/definitions/environment.ts';
import { SluiceStack } from '../../lib/sluice-stack.ts';

export interface GatewayRequest {
  readonly method: string;
  /** After the stage: `/v1/events`. */
  readonly path: string;
  readonly query?: ReadonlyArray<readonly [string, string]>;
  readonly headers?: ReadonlyArray<readonly [string, string]>;
  readonly body?: Uint8Array;
  /**
   * Called through a custom domain whose base path mapping puts the stage under this base
   * path (`events`): `https://api.example.com/events/v1/…`. API Gateway then starts `path`
   * (and `requestContext.path`) with it, with no stage; the resource and path parameters
   * are as through the API's own URL.
   */
  readonly basePath?: string;
}

/** The stack's resource a request matches: the public health check's own, or the proxy behind the authorizer. */
function resourceOf(request: GatewayRequest): string {
  return request.path === '/v1/health' && ['GET', 'HEAD'].includes(request.method) ? '/v1/health' : '/{proxy+}';
}

/** What the authorizer's answer puts in `requestContext.authorizer`. */
export type Caller = { readonly principal: 'tenant'; readonly tenantId: string } | { readonly principal: 'admin' };

/** The BinaryMediaTypes of the stack's RestApi, as `cdk synth` writes them (bundling skipped). */
export function deployedBinaryMediaTypes(): string[] {
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  const [api] = Object.values(Template.fromStack(new SluiceStack(app, 'Sluice')).findResources('AWS::ApiGateway::RestApi'));
  return (api?.Properties.BinaryMediaTypes as string[] | undefined) ?? [];
}

/** Whether API Gateway passes a body of this content type as bytes: a type listed, or matched by a listed `type/*` or `*\/*`. */
function passedAsBytes(contentType: string | undefined, binaryMediaTypes: readonly string[]): boolean {
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  return binaryMediaTypes.some(
    (listed) => listed === '*/*' || listed === type || (listed.endsWith('/*') && type.startsWith(listed.slice(0, -1))),
  );
}

/** Each name's values in order, as API Gateway's multi-value maps list them. */
function valuesByName(pairs: ReadonlyArray<readonly [string, string]>): Record<string, string[]> {
  const byName: Record<string, string[]> = {};
  for (const [name, value] of pairs) byName[name] = [...(byName[name] ?? []), value];
  return byName;
}

export function gatewayEvent(request: GatewayRequest, caller: Caller, binaryMediaTypes: readonly string[]): LambdaEvent {
  const host = request.basePath === undefined ? 'abc123.execute-api.us-east-1.amazonaws.com' : 'api.example.com';
  const resource = resourceOf(request);
  const path = request.basePath === undefined ? request.path : `/${request.basePath}${request.path}`;
  const sent: Array<readonly [string, string]> = [['Host', host], ['X-Forwarded-Proto', 'https'], ...(request.headers ?? [])];
  const headers = Object.fromEntries(sent);
  const multiValueHeaders = valuesByName(sent);
  const queries = request.query ?? [];
  const query = queries.length > 0 ? Object.fromEntries(queries) : null;
  const multiValueQuery = queries.length > 0 ? valuesByName(queries) : null;
  const contentType = Object.entries(headers).find(([name]) => name.toLowerCase() === 'content-type')?.[1];
  const asBytes = request.body !== undefined && passedAsBytes(contentType, binaryMediaTypes);
  const body = request.body === undefined ? null : Buffer.from(request.body).toString(asBytes ? 'base64' : 'utf8');
  return {
    resource,
    path,
    httpMethod: request.method,
    headers,
    multiValueHeaders,
    queryStringParameters: query,
    multiValueQueryStringParameters: multiValueQuery,
    pathParameters: resource === '/{proxy+}' ? { proxy: request.path.slice(1) } : null,
    stageVariables: null,
    requestContext: {
      accountId: '123456789012',
      apiId: 'abc123',
      domainName: host,
      domainPrefix: host.split('.')[0],
      extendedRequestId: 'e',
      httpMethod: request.method,
      identity: { sourceIp: '192.0.2.1', userAgent: 'test' },
      path: request.basePath === undefined ? `/${API_STAGE_NAME}${request.path}` : path,
      protocol: 'HTTP/1.1',
      requestId: 'r',
      requestTime: '01/Dec/2026:00:00:00 +0000',
      requestTimeEpoch: Date.now(),
      resourceId: 'p',
      resourcePath: resource,
      stage: API_STAGE_NAME,
      authorizer: { principalId: caller.principal === 'tenant' ? caller.tenantId : 'admin', integrationLatency: 12, ...caller },
    },
    body,
    isBase64Encoded: asBytes,
  } as unknown as LambdaEvent;
}
