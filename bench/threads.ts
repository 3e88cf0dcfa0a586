/**
 * Which thread of the bench's process used the CPU, and when: the sandbox's
 * functions (the main thread), its API thread, its emulators, the receivers and each
 * publisher. On a 2-core machine a storm's latency is mostly a question of who had a
 * core, so the storm scenarios report this beside the latencies. Linux only (read
 * from /proc/self/task); elsewhere the figures are null.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Thread names as the kernel keeps them (15 characters), and what each one runs. */
const ROLES: ReadonlyArray<readonly [prefix: string, role: string]> = [
  ['MainThread', 'functions'],
  ['sluice-api', 'api'],
  ['sluice-emulator', 'emulators'],
  ['bench-receiver', 'receivers'],
  ['bench-bystander', 'bystander'],
  ['raw-caller-', 'raw callers'],
  ['pub-', 'publisher '],
  ['V8Worker', 'v8 helpers'],
  ['DelayedTaskSche', 'v8 helpers'],
  ['libuv-worker', 'libuv pool'],
];

function roleOf(name: string): string {
  for (const [prefix, role] of ROLES) {
    if (name.startsWith(prefix)) return role.endsWith(' ') ? role + name.slice(prefix.length) : role;
  }
  return 'other';
}

interface Sample {
  readonly at: number;
  /** Per thread id: its role and its CPU time so far, in clock ticks. */
  readonly threads: Map<string, { role: string; ticks: number }>;
}

function ticksPerSecond(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

function sample(): Sample | undefined {
  const threads = new Map<string, { role: string; ticks: number }>();
  let ids: string[];
  try {
    ids = readdirSync('/proc/self/task');
  } catch {
    return undefined;
  }
  for (const id of ids) {
    try {
      const stat = readFileSync(`/proc/self/task/${id}/stat`, 'utf8');
      // The name is in parentheses and may hold spaces: the fields after it are fixed.
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      threads.set(id, { role: roleOf(name), ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return { at: Date.now(), threads };
}

/**
 * Samples every thread's CPU time twice a second until stopped. `cores(from, to)`
 * answers, per role, the cores it kept busy on average in that window (CPU seconds
 * per second): a thread that ended loses at most its last half second.
 */
export function threadCpu(intervalMs = 500) {
  const hz = ticksPerSecond();
  const samples: Sample[] = [];
  const first = sample();
  if (first) samples.push(first);
  const timer = first
    ? setInterval(() => {
        const next = sample();
        if (next) samples.push(next);
      }, intervalMs)
    : undefined;
  timer?.unref();
  return {
    stop: () => clearInterval(timer),
    cores(from: number, to: number): Record<string, number> | null {
      const inside = samples.filter((s) => s.at >= from && s.at <= to);
      const start = inside[0];
      const end = inside.at(-1);
      if (!start || !end || end.at - start.at < intervalMs) return null;
      const ticks: Record<string, number> = {};
      for (let i = 1; i < inside.length; i++) {
        const earlier = inside[i - 1] as Sample;
        for (const [id, now] of (inside[i] as Sample).threads) {
          const then = earlier.threads.get(id);
          if (then) ticks[now.role] = (ticks[now.role] ?? 0) + now.ticks - then.ticks;
        }
      }
      const seconds = (end.at - start.at) / 1000;
      const cores = Object.entries(ticks)
        .map(([role, t]) => [role, Math.round((t / hz / seconds) * 100) / 100] as const)
        .filter(([, c]) => c > 0)
        .sort(([, a], [, b]) => b - a);
      const total = cores.reduce((sum, [, c]) => sum + c, 0);
      return { ...Object.fromEntries(cores), total: Math.round(total * 100) / 100 };
    },
  };
}
