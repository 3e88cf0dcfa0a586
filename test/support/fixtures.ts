/** Record factories for tests. */
import { INITIAL_HEALTH } from '../../functions/core/health.ts';
import type { Webhook } from '../../functions/core/model.ts';

export function webhookFixture(overrides: Partial<Webhook> = {}): Webhook {
  return {
    id: 'wh_fixture',
    tenantId: 'ten_fixture',
    resource: 'fixture:1',
    url: 'https://example.test/hook',
    types: ['*'],
    description: '',
    status: 'active',
    secrets: ['whsec_AAAA'],
    previousSecretExpiresAt: undefined,
    health: INITIAL_HEALTH,
    healthVersion: 0,
    heldCount: 0,
    probeToken: undefined,
    releaseToken: undefined,
    createdAt: '',
    updatedAt: '',
    ...overrides,
  };
}
