"""Start sesd: the supervisor spawns the API, scheduler and sender processes."""

import sesd.supervisor

if __name__ == "__main__":
    raise SystemExit(sesd.supervisor.main())
