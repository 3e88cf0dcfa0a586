/**
 * Kill switches (SPEC §2, §3 Admin): on-call stops exactly one scope. `pause`
 * accepts and holds, and delivers everything in order when lifted; `drop`
 * discards and counts, and delivers one `sluice.gap` marker when lifted.
 */
import { sqsDelay } from './backoff.ts';

export type SwitchScope = 'tenant' | 'resource' | 'webhook';
export type SwitchAction = 'pause' | 'drop';

export interface Switch {
  readonly id: string;
  readonly scope: SwitchScope;
  readonly tenant: string;
  /** The resource or webhook id; absent for scope tenant. */
  readonly target: string | undefined;
  readonly action: SwitchAction;
  readonly reason: string;
  readonly created_at: string;
}

/** The action in force for an object (tenant or resource scope); drop wins over pause. */
export function actionForObject(switches: readonly Switch[], tenant: string, resource: string): SwitchAction | undefined {
  return strongest(
    switches.filter((s) => s.tenant === tenant && (s.scope === 'tenant' || (s.scope === 'resource' && s.target === resource))),
  );
}

/** The action in force for a webhook's deliveries (tenant or webhook scope). */
export function actionForWebhook(switches: readonly Switch[], tenant: string, webhookId: string): SwitchAction | undefined {
  return strongest(
    switches.filter((s) => s.tenant === tenant && (s.scope === 'tenant' || (s.scope === 'webhook' && s.target === webhookId))),
  );
}

function strongest(matching: readonly Switch[]): SwitchAction | undefined {
  if (matching.some((s) => s.action === 'drop')) return 'drop';
  if (matching.some((s) => s.action === 'pause')) return 'pause';
  return undefined;
}

/**
 * The recheck a delivery held (or dropped) under a switch at `now` asks for, when it is
 * the first of its window of `windowMs` (the switch cache's age): it answers for every
 * hold of that window (`heldBefore`, its end), and runs `marginMs` past it, so that it
 * reads the held store after them. See app/delivery/chains.ts `expectLift`.
 */
export function liftRecheck(now: number, windowMs: number, marginMs: number): { heldBefore: number; delaySeconds: number } {
  const heldBefore = (Math.floor(now / windowMs) + 1) * windowMs;
  return { heldBefore, delaySeconds: sqsDelay((heldBefore + marginMs - now) / 1000).delaySeconds };
}

/**
 * Whether a release step began (`releaseAt`) after every hold a recheck answers for,
 * with `marginMs` for the clocks of two workers: that step saw them, and its chain goes
 * on while anything is held or owed a marker, so the recheck need start none.
 */
export function releasedSince(releaseAt: number | undefined, heldBefore: number, marginMs: number): boolean {
  return (releaseAt ?? 0) > heldBefore + marginMs;
}

/**
 * When a release step that began at `releaseAt` has surely ended: it starts no POST
 * once `deliveryTimeoutMs` has passed, and its last one takes that long at most.
 */
export function releaseStepEndsBy(releaseAt: number | undefined, deliveryTimeoutMs: number, marginMs: number): number {
  return (releaseAt ?? 0) + 2 * deliveryTimeoutMs + marginMs;
}

/**
 * When a release step that sends nothing at `now` (a chain that waits for its time: its
 * start, its looks) is noted as begun: as one that has surely ended by now (see
 * `releaseStepEndsBy`), so that nothing waits for it to end.
 */
export function releaseLookAt(now: number, deliveryTimeoutMs: number, marginMs: number): number {
  return now - 2 * deliveryTimeoutMs - marginMs;
}
