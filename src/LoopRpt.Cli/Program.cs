using LoopRpt.Cli;

// Ctrl+C cancels the running verb (training writes a checkpoint first when --checkpoint-dir is set); a second Ctrl+C kills.
using var cts = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    if (cts.IsCancellationRequested) return;
    e.Cancel = true;
    cts.Cancel();
};
return CliApp.Run(args, Console.Out, Console.Error, cts.Token);
