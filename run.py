"""Start sesd: the supervisor spawns the API, scheduler and sender processes."""

if __name__ == "__main__":
    # Imported here, not at the top: each spawned child runs this file again (as __mp_main__)
    # and needs only its own role's modules, not the supervisor's imports of every role.
    import sesd.supervisor

    raise SystemExit(sesd.supervisor.main())
