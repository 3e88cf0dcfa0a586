import { describe, expect, it } from 'vitest';
import {
  endpointRate,
  holdsBehindPace,
  keepsShare,
  MAX_IN_FLIGHT_PER_ENDPOINT,
  PACE_BURST_MS,
  PACE_FAR_AHEAD_MS,
  PACE_LOOK_MIN_SECONDS,
  pacedFarAhead,
  paceInterval,
  paceIntervalFor,
  paceLookSeconds,
  paceSendAt,
  QUICK_HOLD_AHEAD_MS,
  SLOW_ANSWER_MS,
  slowAfterAnswer,
  slowAnswerChanged,
  unansweredNoteAfter,
} from '../../functions/core/endpoint-pace.ts';

describe("an endpoint's pace", () => {
  it('gives each POST 1000 / rate ms of the endpoint', () => {
    expect([paceInterval(50), paceInterval(4), paceInterval(1)]).toEqual([20, 250, 1000]);
  });

  it("is the deployment's rate, or less where the webhook asks for less, never more", () => {
    expect([endpointRate(50, undefined), endpointRate(50, 5), endpointRate(50, 50), endpointRate(20, 50)]).toEqual([50, 5, 50, 20]);
  });

  it("sends a second's worth of the rate at once and no more, then each send one share after the one before", () => {
    const now = 1_000_000;
    const interval = paceInterval(50);
    // The shares of 60 sends reserved together at `now` on a free endpoint.
    const sendAt = Array.from({ length: 60 }, (_, i) => paceSendAt(now + i * interval, now, interval));
    expect(sendAt.filter((t) => t === now)).toHaveLength(50);
    expect(sendAt.slice(50)).toEqual(Array.from({ length: 10 }, (_, i) => now + (i + 1) * interval));
  });

  it('sends at once what its share allows and at most a second ahead of a share far off', () => {
    const now = 1_000_000;
    expect(paceSendAt(now - 5_000, now, 20)).toBe(now);
    expect(paceSendAt(now + 60_000, now, 20)).toBe(now + 60_000 - PACE_BURST_MS + 20);
    // At one POST a second, nothing goes early: the burst is the one share.
    expect(paceSendAt(now + 1_000, now, 1_000)).toBe(now + 1_000);
  });
});

describe("a slow endpoint's pace", () => {
  it('takes its answer time over the POSTs it may have under way for each POST, when that is longer than its rate allows', () => {
    expect(MAX_IN_FLIGHT_PER_ENDPOINT).toBe(10);
    expect(paceIntervalFor(50, undefined)).toBe(20);
    expect(paceIntervalFor(50, 9_000)).toBe(900);
    expect(paceIntervalFor(50, 12_000)).toBe(1_200);
    // A low rate already keeps fewer under way.
    expect(paceIntervalFor(1, 3_000)).toBe(1_000);
  });

  it('sends a share longer than the burst when it starts, not later', () => {
    const now = 1_000_000;
    expect(paceSendAt(now + 2_400, now, 1_200)).toBe(now + 2_400);
    expect(paceSendAt(now, now, 1_200)).toBe(now);
  });

  it("keeps a slow answer's time, halves it on a quicker answer, and forgets it under a second", () => {
    expect(SLOW_ANSWER_MS).toBe(1_000);
    expect(slowAfterAnswer(undefined, 300, true)).toBeUndefined();
    expect(slowAfterAnswer(undefined, 1_000, true)).toBe(1_000);
    expect(slowAfterAnswer(2_000, 9_000.4, true)).toBe(9_000);
    expect(slowAfterAnswer(9_000, 200, true)).toBe(4_500);
    expect(slowAfterAnswer(1_900, 200, true)).toBeUndefined();
  });

  it('keeps its slowness through quick answers that take no delivery, and takes a slow one whatever it says', () => {
    expect(slowAfterAnswer(9_000, 30, false)).toBe(9_000);
    expect(slowAfterAnswer(1_900, 30, false)).toBe(1_900);
    expect(slowAfterAnswer(undefined, 30, false)).toBeUndefined();
    expect(slowAfterAnswer(2_000, 9_000, false)).toBe(9_000);
  });

  it('is written when it comes, goes, or moves by more than a quarter', () => {
    expect(slowAnswerChanged(undefined, undefined)).toBe(false);
    expect(slowAnswerChanged(undefined, 1_200)).toBe(true);
    expect(slowAnswerChanged(1_200, undefined)).toBe(true);
    expect(slowAnswerChanged(1_200, 1_400)).toBe(false);
    expect(slowAnswerChanged(1_200, 1_600)).toBe(true);
  });

  it('notes an unanswered POST after a second, or after twice the slow time kept: each note worth a write', () => {
    expect(unansweredNoteAfter(undefined)).toBe(SLOW_ANSWER_MS);
    expect(unansweredNoteAfter(300)).toBe(SLOW_ANSWER_MS);
    expect(unansweredNoteAfter(1_500)).toBe(3_000);
    expect(slowAnswerChanged(1_500, unansweredNoteAfter(1_500))).toBe(true);
  });

  it('has a delivery waiting for its share look again after half its wait, a minute at least and 15 minutes at most', () => {
    expect(PACE_LOOK_MIN_SECONDS).toBe(60);
    expect([paceLookSeconds(0.3), paceLookSeconds(45), paceLookSeconds(60)]).toEqual([0.3, 45, 60]);
    expect([paceLookSeconds(61), paceLookSeconds(120), paceLookSeconds(121)]).toEqual([60, 60, 60.5]);
    expect([paceLookSeconds(1_200), paceLookSeconds(1_800), paceLookSeconds(86_400)]).toEqual([600, 900, 900]);
    // A wait of 15 minutes takes five looks (450, 225, 112.5, 60, 52.5 s) where one
    // delay would do; one of a day takes 96 delays of 15 minutes either way, and these four.
    let looks = 0;
    for (let left = 900; left > 0; looks++) left -= paceLookSeconds(left);
    expect(looks).toBe(5);
  });

  it("calls a share far ahead past SQS's longest delay, 15 minutes: not a slow moment's minutes, but what a slow endpoint's backlog reaches within seconds", () => {
    expect(PACE_FAR_AHEAD_MS).toBe(900_000);
    expect([pacedFarAhead(120_000), pacedFarAhead(900_000), pacedFarAhead(900_001)]).toEqual([false, false, true]);
    // 50 deliveries a second to an endpoint answering in 9 s: each second books 45 s of its
    // time and frees one, so the shares are past 15 minutes ahead after about 20 s.
    const interval = paceIntervalFor(50, 9_000);
    const bookedAfter = (seconds: number) => seconds * (50 * interval - 1_000);
    expect(pacedFarAhead(bookedAfter(20))).toBe(false);
    expect(pacedFarAhead(bookedAfter(21))).toBe(true);
  });

  it("holds a slow endpoint's delivery rather than give it a share over 15 minutes ahead, and a quick endpoint's one over 5 seconds ahead", () => {
    expect([holdsBehindPace(900_001, 1_200), holdsBehindPace(900_000, 1_200), holdsBehindPace(120_000, 9_000)]).toEqual([
      true,
      false,
      false,
    ]);
    expect([holdsBehindPace(5_001, undefined), holdsBehindPace(5_000, undefined), holdsBehindPace(PACE_BURST_MS, undefined)]).toEqual([
      true,
      false,
      false,
    ]);
    // Past the second's burst that goes at once: an ordinary burst is never held.
    expect(QUICK_HOLD_AHEAD_MS).toBeGreaterThan(PACE_BURST_MS);
  });

  it('keeps a share given at the pace now or a slower one, and of those given at a quicker one the part the pace now allows, by id', () => {
    const ids = Array.from({ length: 4_000 }, (_, i) => `msg_${i}`);
    expect(ids.every((id) => keepsShare(id, 900, 900) && keepsShare(id, 1_200, 900))).toBe(true);
    const kept = ids.filter((id) => keepsShare(id, 900, 1_200)).length / ids.length;
    expect(kept).toBeGreaterThan(0.72);
    expect(kept).toBeLessThan(0.78);
    expect(ids.filter((id) => keepsShare(id, 20, 900)).length / ids.length).toBeLessThan(0.04);
    // The same delivery is judged the same each time it is looked at.
    expect(ids.map((id) => keepsShare(id, 900, 1_200))).toEqual(ids.map((id) => keepsShare(id, 900, 1_200)));
  });
});
