"""fedge's Flower ServerApp. Import-light: Flower spawns a fresh process per run, and the heavy work
(torch, the round loop) is imported only when the run starts."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    if context.run_config.get("job"):
        from fedge.server.jobs import run_job

        run_job(grid, context)
        return
    from fedge.server.round_loop import run_federation

    run_federation(grid, context)
