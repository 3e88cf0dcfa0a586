/**
 * The canary's tenant gets the deployment's default API throttle. At its lowest, a
 * burst of one request, the canary still publishes every run: a call the throttle
 * refuses goes again after its Retry-After. A sandbox of its own, with that default.
 */
import { expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ canary: false, config: { tenantRatePerSecond: 1, tenantBurst: 1 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

it('publishes and delivers every run with tenantBurst 1, where each run after the setup had its ticks refused and canary-stale paged for good', async () => {
  const errors = () => sandbox.metrics.points('function:canary:Errors', 0, Number.MAX_SAFE_INTEGER).length;
  for (let run = 1; run <= 3; run++) {
    await sandbox.runCanary();
    expect(sandbox.metrics.total('CanaryPublished'), `run ${run}`).toBe(run);
    await receiver.waitFor(() => sandbox.metrics.total('CanaryDelivered') === run, 10_000);
  }
  expect(sandbox.metrics.total('CanaryPublishFailed')).toBe(0);
  expect(errors()).toBe(0);
}, 60_000);
