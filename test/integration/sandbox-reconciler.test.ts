/**
 * The reconciler as the sandbox runs it: with its time left, as Lambda's context gives
 * it to the function (functions/reconciler/handler.ts), so that a run over a large
 * index reads what leaves it the time to ring and report, as it does in AWS.
 */
import { describe, expect, it } from 'vitest';
import { reconcilerTimeoutSeconds } from '../../functions/definitions/environment.ts';
import { SCHEDULE_INDEX, SCHEDULE_SHARDS } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
withSandbox({ canary: false }, (s) => {
  sandbox = s;
});

/** How late each read of a `by_schedule` shard answers: a large index's pages, or DynamoDB slowed. */
const SHARD_READ_MS = 4_000;

describe('the sandbox reconciler', () => {
  it('reports within its timeout when its index takes longer to read than that, where the run read every shard and reported after it', async () => {
    const timeoutMs = reconcilerTimeoutSeconds(sandbox.config.reconcileIntervalSeconds) * 1000;
    // Every shard read in turn would outlast the function's timeout.
    expect(SCHEDULE_SHARDS * SHARD_READ_MS).toBeGreaterThan(timeoutMs);
    sandbox.wiring.dynamo.middlewareStack.add(
      (next) => async (args) => {
        if ((args.input as { IndexName?: string }).IndexName === SCHEDULE_INDEX) {
          await new Promise((resolve) => setTimeout(resolve, SHARD_READ_MS));
        }
        return next(args);
      },
      { step: 'initialize', name: 'slowScheduleIndex' },
    );

    const started = Date.now();
    await sandbox.reconcile();
    const took = Date.now() - started;

    // As in AWS: it read the shards half its time allows, then reported its sweep (the heartbeat reconciler-stale reads).
    expect(took).toBeLessThan(timeoutMs);
    expect(sandbox.metrics.points('sluice:ScheduledObjects', started, Date.now() + 1)).toHaveLength(1);
  }, 120_000);
});
