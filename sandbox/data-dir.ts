/**
 * A sandbox's claim on its data folder (SLUICE_DATA_DIR). dynalite's store admits one
 * process at a time, and a second sandbox on the same folder would otherwise start and
 * then stop on "Database is closed", which says nothing of the other one.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class DataDirInUseError extends Error {}

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
 * Claims `dataDir` for this process, or throws DataDirInUseError naming the process that
 * has it. A claim left by a sandbox that did not stop (its process is gone) is taken
 * over. Answers the release, which is also made when the process exits.
 */
export function claimDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'sandbox.pid');
  for (;;) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(readFileSync(file, 'utf8'));
      if (running(holder)) {
        throw new DataDirInUseError(
          `${dataDir} is in use by another sandbox (process ${holder}): stop it, or set SLUICE_DATA_DIR to another folder.`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    rmSync(file, { force: true });
  };
  process.once('exit', release);
  return release;
}
