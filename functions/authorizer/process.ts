/**
 * The Lambda authorizer (TOKEN type), as a factory shared by API Gateway and the
 * sandbox. It allows the whole API for a valid key, because API Gateway caches the
 * decision per key; the routes check tenant or admin themselves. A bad key gets a
 * Deny policy, which API Gateway answers with its ACCESS_DENIED response, shaped as
 * a 401 `unauthorized` by the stack (lib/constructs/api.ts). Not the documented
 * `throw new Error('Unauthorized')`: Lambda counts a thrown error in the function's
 * Errors, so every caller with a wrong key would page on-call (authorizer-errors),
 * which must mean that the authorizer itself is failing.
 */
import type { APIGatewayAuthorizerResult, APIGatewayTokenAuthorizerEvent } from 'aws-lambda';
import { type AuthorizeDeps, authorize } from '../app/authorize.ts';
import { bearerToken, keyKind } from '../core/keys.ts';
import { type LoggerPort, LogTally, type MetricsPort, NO_LOGS, NO_METRICS } from '../core/telemetry.ts';

export type AuthorizerHandler = (event: APIGatewayTokenAuthorizerEvent) => Promise<APIGatewayAuthorizerResult>;

/** The context keys the API reads back from `requestContext.authorizer`. */
export const AUTH_CONTEXT = { principal: 'principal', tenantId: 'tenantId' } as const;

/** `arn:aws:execute-api:region:account:api-id/stage/METHOD/path` → `…:api-id/stage/*` */
function wholeApi(methodArn: string): string {
  const [apiArn, stage] = methodArn.split('/');
  return `${apiArn}/${stage}/*`;
}

export interface AuthorizerDeps extends AuthorizeDeps {
  readonly metrics?: MetricsPort;
  readonly logger?: LoggerPort;
  readonly now?: () => number;
}

/**
 * How often a container logs the keys it refused. Each refusal is counted
 * (`KeysRefused`, by kind); a line per refusal would let a caller cycling random keys,
 * each a new invocation that API Gateway's cache cannot answer, buy log volume at
 * CloudWatch Logs' price, and say nothing the count does not.
 */
export const REFUSED_LOG_INTERVAL_MS = 60_000;

/** What a refused header held, for logs and metrics: never the key itself. */
function refusedKind(header: string): 'admin' | 'tenant' | 'malformed' {
  const key = bearerToken(header);
  return (key !== undefined && keyKind(key)) || 'malformed';
}

export function makeAuthorizerHandler(deps: AuthorizerDeps): AuthorizerHandler {
  const { metrics = NO_METRICS, logger = NO_LOGS, now = Date.now } = deps;
  // Refusals since this container's last line about them, by kind; the first is logged at once.
  const refused = new LogTally(REFUSED_LOG_INTERVAL_MS);
  return async (event) => {
    let result: Awaited<ReturnType<typeof authorize>>;
    try {
      result = await authorize(deps, event.authorizationToken);
    } catch (error) {
      // API Gateway answers 500 (AUTHORIZER_FAILURE); authorizer-errors pages for these.
      logger.error('A key could not be checked', { error });
      throw error;
    }
    if (!result) {
      // API Gateway keeps this answer for its cache's time: one count per key and minute.
      const kind = refusedKind(event.authorizationToken);
      metrics.count('KeysRefused', 1, { kind });
      const due = refused.note('keys', now(), { [kind]: 1 });
      if (due) logger.info('Keys refused', { refused_by_kind: due });
      return {
        principalId: 'anonymous',
        policyDocument: {
          Version: '2012-10-17',
          Statement: [{ Action: 'execute-api:Invoke', Effect: 'Deny', Resource: wholeApi(event.methodArn) }],
        },
      };
    }
    const { principal } = result;
    return {
      principalId: principal.kind === 'tenant' ? principal.tenantId : 'admin',
      usageIdentifierKey: result.usageKey,
      policyDocument: {
        Version: '2012-10-17',
        Statement: [{ Action: 'execute-api:Invoke', Effect: 'Allow', Resource: wholeApi(event.methodArn) }],
      },
      context: {
        [AUTH_CONTEXT.principal]: principal.kind,
        ...(principal.kind === 'tenant' && { [AUTH_CONTEXT.tenantId]: principal.tenantId }),
      },
    };
  };
}
