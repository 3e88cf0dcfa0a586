/**
 * API Gateway's own refusals, which in AWS never reach the API's Lambda: the sandbox
 * answers a throttled key from its HTTP server's listener, before the API's app
 * builds a web-standard request and response for it (several times the CPU, on the
 * thread that also runs the API function). Only the clear case is answered here:
 * everything else goes the whole way and meets the same checks in the app's order.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { APIGatewayAuthorizerResult } from 'aws-lambda';
import type { LocalUsagePlans } from '../functions/adapters/usage-plans.ts';
import { errorBody } from '../functions/api/app.ts';
import { AUTH_CONTEXT } from '../functions/authorizer/process.ts';
import { GATEWAY_MESSAGES } from '../functions/definitions/gateway.ts';

/** The usage plan's refusal, as the stack's gateway response words it. */
const THROTTLED_BODY = JSON.stringify(errorBody('rate_limited', GATEWAY_MESSAGES.throttled));

/** Answers a request as the usage plan's throttle does: 429, wait `waitSeconds`, the same body as the API's own refusal. */
export function answerThrottled(res: ServerResponse, waitSeconds: number): void {
  res.writeHead(429, { 'content-type': 'application/json', 'retry-after': String(waitSeconds) }).end(THROTTLED_BODY);
}

/** A Deny policy is the authorizer's refusal: API Gateway answers it 401 (ACCESS_DENIED). */
export const denies = (answer: APIGatewayAuthorizerResult) =>
  answer.policyDocument.Statement.some((statement) => statement.Effect === 'Deny');

export interface GatewayDeps {
  /** The authorizer's cached answer for an Authorization header, while API Gateway would still use it. */
  readonly cachedAnswer: (header: string, now: number) => APIGatewayAuthorizerResult | undefined;
  readonly usagePlans: Pick<LocalUsagePlans, 'knows' | 'refusal'>;
  /** A tenant's throttle when its plan names none. */
  readonly tenantLimits: { readonly rate: number; readonly burst: number };
}

/**
 * The seconds to wait that the usage plan's 429 names, when API Gateway would refuse
 * this request for its key's throttle; undefined to let the API's app answer it: no
 * cached answer for its one Authorization header, a Deny, a plan not loaded yet, a
 * token there now, or a request that meets no authorizer (the health check, anything
 * outside `/v1/`). Takes no token.
 */
export function gatewayRefusal(
  req: Pick<IncomingMessage, 'url' | 'method' | 'headersDistinct'>,
  now: number,
  deps: GatewayDeps,
): number | undefined {
  const path = (req.url ?? '').split('?', 1)[0] ?? '';
  const headers = req.headersDistinct.authorization;
  const header = headers?.length === 1 ? headers[0] : undefined;
  if (!path.startsWith('/v1/') || path === '/v1/health' || header === undefined) return undefined;
  const answer = deps.cachedAnswer(header, now);
  if (!answer || denies(answer)) return undefined;
  const usageKey = answer.usageIdentifierKey as string;
  if (answer.context?.[AUTH_CONTEXT.principal] === 'tenant' && !deps.usagePlans.knows(usageKey)) return undefined;
  return deps.usagePlans.refusal(usageKey, now, deps.tenantLimits);
}
