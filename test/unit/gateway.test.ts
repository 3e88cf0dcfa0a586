/**
 * The sandbox's API Gateway part that answers a throttled key before the API's app:
 * it refuses only a request whose key has a cached answer that allows it and whose
 * usage plan has no token now, and takes no token itself.
 */
import type { APIGatewayAuthorizerResult } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { LocalUsagePlans } from '../../functions/adapters/usage-plans.ts';
import { AUTH_CONTEXT } from '../../functions/authorizer/process.ts';
import type { Tenant } from '../../functions/core/model.ts';
import { type GatewayDeps, gatewayRefusal } from '../../sandbox/gateway.ts';

const NOW = 1_800_000_000_000;
const answer = (effect: 'Allow' | 'Deny', principal: 'tenant' | 'admin', usageKey: string): APIGatewayAuthorizerResult => ({
  principalId: 'p',
  policyDocument: { Version: '2012-10-17', Statement: [{ Action: 'execute-api:Invoke', Effect: effect, Resource: '*' }] },
  context: { [AUTH_CONTEXT.principal]: principal },
  usageIdentifierKey: usageKey,
});
const request = (authorization: string[] | undefined, url = '/v1/events', method = 'POST') => ({
  url,
  method,
  headersDistinct: authorization ? { authorization } : {},
});

/** A plan with a burst of one, spent at NOW. */
async function spentPlan(usageKey: string): Promise<LocalUsagePlans> {
  const plans = new LocalUsagePlans();
  await plans.provision({ usageKey, limits: { rate_per_second: 1, burst: 1 } } as unknown as Tenant);
  expect(plans.admit(usageKey, NOW, { rate: 1, burst: 1 })).toBeUndefined();
  return plans;
}

function deps(plans: LocalUsagePlans, answers: Record<string, APIGatewayAuthorizerResult>): GatewayDeps {
  return { cachedAnswer: (header) => answers[header], usagePlans: plans, tenantLimits: { rate: 500, burst: 1_000 } };
}

describe('gatewayRefusal', () => {
  it("refuses a cached, allowed key whose plan has no token, with the plan's wait", async () => {
    const plans = await spentPlan('k1');
    const gateway = deps(plans, { 'Bearer sk_1': answer('Allow', 'tenant', 'k1') });

    expect(gatewayRefusal(request(['Bearer sk_1']), NOW, gateway)).toBe(1);
    expect(gatewayRefusal(request(['Bearer sk_1'], '/v1/webhooks?limit=5', 'GET'), NOW + 10, gateway)).toBe(1);
    // API Gateway's authorizer and usage plan meet every method, a HEAD's too.
    expect(gatewayRefusal(request(['Bearer sk_1'], '/v1/events', 'HEAD'), NOW + 10, gateway)).toBe(1);
  });

  it('leaves to the app whatever it cannot be sure of', async () => {
    const plans = await spentPlan('k1');
    const gateway = deps(plans, {
      'Bearer sk_1': answer('Allow', 'tenant', 'k1'),
      'Bearer sk_deny': answer('Deny', 'tenant', 'k1'),
      'Bearer sk_new': answer('Allow', 'tenant', 'unloaded'),
    });
    const cases = {
      'no Authorization header': request(undefined),
      'two Authorization headers': request(['Bearer sk_1', 'Bearer sk_1']),
      'no cached answer': request(['Bearer sk_other']),
      'a Deny': request(['Bearer sk_deny']),
      'a plan not loaded yet': request(['Bearer sk_new']),
      'the health check': request(['Bearer sk_1'], '/v1/health', 'GET'),
      'outside /v1/': request(['Bearer sk_1'], '/sandbox/inbox/x', 'GET'),
    };

    for (const [name, req] of Object.entries(cases)) expect(gatewayRefusal(req, NOW, gateway), name).toBeUndefined();
  });

  it('lets a key through when its plan has a token again, and takes none of it', async () => {
    const plans = await spentPlan('k1');
    const gateway = deps(plans, { 'Bearer sk_1': answer('Allow', 'tenant', 'k1') });

    expect(gatewayRefusal(request(['Bearer sk_1']), NOW + 1_000, gateway)).toBeUndefined();
    expect(gatewayRefusal(request(['Bearer sk_1']), NOW + 1_000, gateway)).toBeUndefined();
    // The token is still there for the app's own check.
    expect(plans.admit('k1', NOW + 1_000, { rate: 1, burst: 1 })).toBeUndefined();
    expect(plans.admit('k1', NOW + 1_000, { rate: 1, burst: 1 })).toBe(1);
  });

  it("throttles the admin key by the tenants' default limits, as the app does", () => {
    const plans = new LocalUsagePlans();
    const gateway = { ...deps(plans, { 'Bearer ak_1': answer('Allow', 'admin', 'sandbox-admin') }), tenantLimits: { rate: 1, burst: 1 } };
    expect(plans.admit('sandbox-admin', NOW, { rate: 1, burst: 1 })).toBeUndefined();

    expect(gatewayRefusal(request(['Bearer ak_1'], '/v1/admin/tenants'), NOW, gateway)).toBe(1);
  });
});
