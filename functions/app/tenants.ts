/** Tenants (SPEC §3 Admin): created by the admin, each with one API key shown once. */

import type { TenantStore } from '../adapters/tenant-store.ts';
import type { UsagePlans } from '../adapters/usage-plans.ts';
import { newId } from '../core/ids.ts';
import { generateApiKey, hashKey } from '../core/keys.ts';
import type { Tenant } from '../core/model.ts';
import type { TenantInput } from '../core/validation.ts';

export interface TenantServiceDeps {
  readonly tenants: TenantStore;
  readonly usagePlans: UsagePlans;
  readonly now: () => number;
}

export async function createTenant(deps: TenantServiceDeps, input: TenantInput) {
  const now = deps.now();
  const apiKey = generateApiKey('tenant');
  const tenant: Tenant = {
    id: newId('ten', now),
    name: input.name,
    limits: input.limits,
    usageKey: generateApiKey('tenant').slice(3),
    createdAt: new Date(now).toISOString(),
  };
  // The throttle exists before the key can be used; if storing fails, it is removed again.
  const provisioning = await deps.usagePlans.provision(tenant);
  try {
    await deps.tenants.create(tenant, hashKey(apiKey), provisioning);
  } catch (error) {
    await deps.tenants.delete(tenant.id).catch(() => undefined);
    await deps.usagePlans.remove(provisioning).catch(() => undefined);
    throw error;
  }
  return { id: tenant.id, name: tenant.name, limits: tenant.limits, api_key: apiKey, created_at: tenant.createdAt };
}
