// Whether a process still runs: lock files (spools, the replay ledger) name their holder's pid, and a
// lock left by a process that died (kill -9) must not block the next one.

/** True when a process with this pid exists (EPERM: it does, under another user). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
