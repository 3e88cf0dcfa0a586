/**
 * How late the functions' thread (the sandbox's main thread, which also runs the
 * pollers) ran what was due: Node's event-loop delay monitor, read and reset every
 * second. A window whose slow requests line up with long delays here waited for this
 * thread (a garbage collection, a long synchronous step), not for an emulator.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';

/** A second's reading: its longest delay, in ms. */
interface Reading {
  readonly at: number;
  readonly maxMs: number;
}

/** Delays of at least this many ms count as stalls. */
const STALL_MS = 20;

/**
 * How often the monitor looks (ms). Node's histogram records the whole time between
 * two of its looks, this wait included (an idle thread reads about 10 ms), so a
 * reading is that time less this.
 */
const RESOLUTION_MS = 10;

export function loopDelay(intervalMs = 1_000) {
  const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  histogram.enable();
  const readings: Reading[] = [];
  const timer = setInterval(() => {
    // A reset histogram that recorded nothing reads 0; nothing was late then either.
    readings.push({ at: Date.now(), maxMs: Math.max(0, histogram.max / 1e6 - RESOLUTION_MS) });
    histogram.reset();
  }, intervalMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      histogram.disable();
    },
    /**
     * In a window: the longest delay, and in how many of its readings (seconds) the
     * thread stalled for STALL_MS or more; null for a window it did not read.
     */
    window(from: number, to: number): { max_ms: number; stalled_seconds: number } | null {
      const inside = readings.filter((r) => r.at > from && r.at <= to);
      if (inside.length === 0) return null;
      return {
        max_ms: Math.round(Math.max(...inside.map((r) => r.maxMs))),
        stalled_seconds: inside.filter((r) => r.maxMs >= STALL_MS).length,
      };
    },
  };
}
