/**
 * A sandbox's claim on its data folder (SLUICE_DATA_DIR). dynalite's store admits one
 * process at a time, and a second sandbox on the same folder would otherwise start and
 * then stop on "Database is closed", which says nothing of the other one.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** A data folder the sandbox cannot use: said in a sentence, as a bad setting is. */
export class DataDirError extends Error {}

export class DataDirInUseError extends DataDirError {}

/** Why the folder cannot be made or written, in the words of someone choosing another. */
function unusable(dataDir: string, error: unknown): DataDirError {
  const code = (error as NodeJS.ErrnoException).code;
  const why =
    code === 'EEXIST'
      ? 'it is a file, not a folder'
      : code === 'ENOTDIR'
        ? 'a part of its path is a file, not a folder'
        : code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
          ? 'this user may not write there'
          : (error as Error).message;
  return new DataDirError(`SLUICE_DATA_DIR ${dataDir} cannot be used: ${why}. Set it to a folder this user may write, or leave it unset.`);
}

/** The folders this process has claimed and not released (resolved paths). */
const claimed = new Set<string>();

/** Whether a process with this id is running (one of another user's counts). */
function running(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * When a process started, as Linux counts it (clock ticks after boot, field 22 of its
 * /proc stat, read after the name, which may hold spaces); undefined where there is no
 * /proc (macOS) or no such process. A process id is given again to another process once
 * its own has ended: its start time tells the two apart.
 */
function startedAt(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Whether the process a claim names still holds it: it runs, and, where the claim and
 * the system both give its start time, it is the process that started then, not one
 * given its id since (in a container started again, the old sandbox's id may be npm's
 * or a shell's now, which would hold the folder for good).
 */
function holds(pid: number, start: string | undefined): boolean {
  if (!running(pid)) return false;
  const now = start === undefined ? undefined : startedAt(pid);
  return now === undefined || now === start;
}

/**
 * Claims `dataDir` for this process, or throws DataDirInUseError naming the process that
 * has it (a DataDirError if the folder cannot be made or written: a file of that name,
 * say). A claim left by a sandbox that did not stop (its process is gone) is taken
 * over, and so is one that names this very process without its having claimed the
 * folder: a sandbox killed hard in a container (SIGKILL, out of memory) left its id,
 * and the container started again gives the same id to the same process (node is
 * process 1, or the same few after npm), which refused itself as "another sandbox"
 * at every start until the file was deleted by hand. Answers the release, which is
 * also made when the process exits.
 */
export function claimDataDir(dataDir: string): () => void {
  try {
    // Owner only: it holds webhooks' signing secrets and the sandbox canary's tenant key.
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw unusable(dataDir, error);
  }
  const folder = resolve(dataDir);
  const file = join(dataDir, 'sandbox.pid');
  for (;;) {
    try {
      writeFileSync(file, `${process.pid} ${startedAt(process.pid) ?? ''}`.trim(), { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw unusable(dataDir, error);
      // "<pid> <start time>"; a sandbox of an earlier checkout wrote the id alone.
      const [id, start] = readFileSync(file, 'utf8').trim().split(/\s+/);
      const holder = Number(id);
      const ours = holder === process.pid;
      if (ours ? claimed.has(folder) : holds(holder, start)) {
        throw new DataDirInUseError(
          `${dataDir} is in use by another sandbox (process ${holder}): stop it, or set SLUICE_DATA_DIR to another folder.`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  claimed.add(folder);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    claimed.delete(folder);
    rmSync(file, { force: true });
  };
  process.once('exit', release);
  return release;
}
