/**
 * A flood stands in for a client on another machine, so it gives the CPU to the
 * sandbox and to the receivers, whose clocks time latency: it runs in a process of
 * its own started under SCHED_IDLE (`chrt --idle 0`), or else at nice 19, so that
 * every one of its threads (V8's garbage collector and compiler too) yields to the
 * sandbox's. As a thread of the bench's process only its own thread yielded, and its
 * garbage was collected by the process's shared helper threads at normal priority.
 * It still sends all it can with the CPU the rest leaves; the scenario reports how
 * many requests that was and how much CPU it took. Calm publishers run on threads at
 * normal priority: their 202s start the latency clock.
 */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { PublishTask, TaskResult, TaskStats } from './load.ts';

/** The environment variables that hand a flood's task, and the priority it got, to its process (load.ts). */
export const FLOOD_TASK_ENV = 'SLUICE_BENCH_FLOOD_TASK';
export const FLOOD_PRIORITY_ENV = 'SLUICE_BENCH_FLOOD_PRIORITY';

/** The command that starts `script` at the lowest priority this machine offers. */
export function floodCommand(script: string): { command: string; args: string[]; priority: TaskStats['priority'] } {
  const ways: ReadonlyArray<readonly [string, readonly string[], TaskStats['priority']]> = [
    ['chrt', ['--idle', '0'], 'idle'],
    ['nice', ['-n', '19'], 'nice 19'],
  ];
  for (const [command, args, priority] of ways) {
    try {
      execFileSync(command, [...args, 'true'], { stdio: 'ignore' });
      return { command, args: [...args, process.execPath, script], priority };
    } catch {
      // Not on this machine: the next one.
    }
  }
  return { command: process.execPath, args: [script], priority: 'normal' };
}

/** Runs a flood's task in a process of its own and answers what it did. */
export async function floodProcess(task: PublishTask): Promise<TaskResult> {
  const { command, args, priority } = floodCommand(fileURLToPath(new URL('./load.ts', import.meta.url)));
  const child = spawn(command, args, {
    env: { ...process.env, [FLOOD_TASK_ENV]: JSON.stringify(task), [FLOOD_PRIORITY_ENV]: priority },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const answered = new Promise<TaskResult>((resolve, reject) => {
    child.once('message', (message) => resolve(message as TaskResult));
    child.once('error', reject);
    void exited.then((code) => reject(new Error(`The flood's process exited with code ${code} before it answered`)));
  });
  const result = await answered;
  await exited;
  return result;
}
