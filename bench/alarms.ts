/**
 * Which alarms a scenario fired, and when. The watch begins before the storm, so an
 * alarm already in ALARM then (or one the calm traffic fired) shows with a negative
 * time instead of passing for the storm's; and each time an alarm goes to ALARM
 * counts, so one that fired, cleared and fired again shows both.
 */
import type { AlarmState } from '../sandbox/alarms.ts';

/** Evaluates the alarms now and every second after, as CloudWatch would, and keeps each move to ALARM. */
export function watchAlarms(alarms: () => readonly Pick<AlarmState, 'name' | 'state'>[], everyMs = 1_000) {
  const fired: Array<{ name: string; at: number }> = [];
  let inAlarm = new Set<string>();
  const look = () => {
    const now = new Set(alarms().flatMap((alarm) => (alarm.state === 'ALARM' ? [alarm.name] : [])));
    for (const name of now) if (!inAlarm.has(name)) fired.push({ name, at: Date.now() });
    inAlarm = now;
  };
  look();
  const timer = setInterval(look, everyMs);
  return {
    stop: () => clearInterval(timer),
    /** Each move to ALARM, in seconds from `start` (negative: before it). */
    firedSince: (start: number) => fired.map((f) => ({ name: f.name, after_s: Math.round((f.at - start) / 1000) })),
  };
}
