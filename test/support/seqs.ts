/**
 * What the queue protocol's properties check of one object's distributed events, in the
 * order they went out: a republished chunk repeats an event with its seq, never gives
 * that seq to another event, and never reorders.
 */
import { expect } from 'vitest';

interface Distributed {
  readonly id: string;
  readonly seq: number;
}

/** Each seq names one event (the one it went out with first); answers the event of each seq. */
export function expectOneEventPerSeq(ofObject: readonly Distributed[], label = ''): Map<number, string> {
  const bySeq = new Map<number, string>();
  for (const e of ofObject) {
    const other = bySeq.get(e.seq);
    if (other !== undefined) expect(other, `seq ${e.seq}${label}`).toBe(e.id);
    bySeq.set(e.seq, e.id);
  }
  return bySeq;
}

/** The seqs, taken where each first went out, increase. */
export function expectFirstSentInSeqOrder(ofObject: readonly Distributed[]): void {
  const firstSeen: number[] = [];
  const seen = new Set<number>();
  for (const e of ofObject) {
    if (!seen.has(e.seq)) firstSeen.push(e.seq);
    seen.add(e.seq);
  }
  expect(firstSeen).toEqual([...firstSeen].sort((x, y) => x - y));
}
