/**
 * The authorizer's decision, shared by the API Gateway Lambda authorizer and the
 * sandbox: who a bearer key belongs to, and which usage-plan key throttles it.
 */

import type { TenantStore } from '../adapters/tenant-store.ts';
import { bearerToken, hashKey, keyKind, sameHash } from '../core/keys.ts';
import type { Principal } from '../core/model.ts';

export interface AuthorizeDeps {
  readonly adminKeyHash: () => Promise<string>;
  readonly tenants: Pick<TenantStore, 'findByKeyHash'>;
  /** The usage-plan key of the admin's own plan. */
  readonly adminUsageKey: string;
}

export interface Authorization {
  readonly principal: Principal;
  readonly usageKey: string;
}

/** Undefined when the header carries no valid key. */
export async function authorize(deps: AuthorizeDeps, authorizationHeader: string | undefined): Promise<Authorization | undefined> {
  const key = bearerToken(authorizationHeader);
  if (key === undefined) return undefined;
  const kind = keyKind(key);
  if (kind === 'admin') {
    return sameHash(hashKey(key), await deps.adminKeyHash()) ? { principal: { kind: 'admin' }, usageKey: deps.adminUsageKey } : undefined;
  }
  if (kind === 'tenant') {
    const tenant = await deps.tenants.findByKeyHash(hashKey(key));
    return tenant ? { principal: { kind: 'tenant', tenantId: tenant.id }, usageKey: tenant.usageKey } : undefined;
  }
  return undefined;
}
