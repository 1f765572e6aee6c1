using System.CommandLine;
using LoopRpt.Cli.Commands;

namespace LoopRpt.Cli;

/// <summary>
/// The <c>looprpt</c> command-line tool: verbs env, tokenizer, train, evaluate, pareto, score, generate, experiment, serve, store.
/// <see cref="Run"/> is the in-process entry point (the tests call it with string writers); Program.cs passes the console.
/// </summary>
public static class CliApp
{
    /// <summary>The verbs, for help and tests.</summary>
    public static RootCommand CreateRootCommand()
    {
        var root = new RootCommand("looprpt — train, evaluate, score and sample looped language models (Ouro) with LoopRPT reinforcement pre-training.")
        {
            EnvCommand.Create(),
            TokenizerCommand.Create(),
            TrainCommand.Create(),
            EvaluateCommand.Create(),
            ParetoCommand.Create(),
            ScoreCommand.Create(),
            GenerateCommand.Create(),
            ExperimentCommand.Create(),
            ServeCommand.Create(),
            StoreCommand.Create(),
        };
        return root;
    }

    /// <summary>
    /// Parses and runs <paramref name="args"/>, writing results to <paramref name="output"/> and diagnostics to
    /// <paramref name="error"/>; returns the exit code (<see cref="ExitCodes"/>). Never throws for user errors.
    /// </summary>
    public static int Run(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        var parse = CreateRootCommand().Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) error.WriteLine($"looprpt: error: {e.Message}");
            var verb = parse.CommandResult.Command is RootCommand ? "" : parse.CommandResult.Command.Name + " ";
            error.WriteLine($"Run 'looprpt {verb}--help' for usage.");
            return ExitCodes.Usage;
        }
        CliContext.Current = new CliContext(output, error, ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected, cancellationToken);
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            var (code, message) = Classify(e);
            error.WriteLine($"looprpt: error: {message}");
            if (code == ExitCodes.Failure && e is not InvalidOperationException) error.WriteLine(e.ToString());   // a bug: show where
            return code;
        }
        finally
        {
            CliContext.Current = null;
        }
    }

    /// <summary>Maps an exception to an exit code and a message for the user.</summary>
    internal static (int Code, string Message) Classify(Exception e) => e switch
    {
        CliException c => (c.ExitCode, c.Message),
        LoopRpt.Training.TrainingDivergedException or NotFiniteNumberException => (ExitCodes.NumericalError, e.Message),
        OperationCanceledException => (ExitCodes.Cancelled, "cancelled."),
        FileNotFoundException or DirectoryNotFoundException => (ExitCodes.InputError, e.Message),
        InvalidDataException => (ExitCodes.ModelError, e.Message),
        ArgumentException => (ExitCodes.Usage, e.Message.Split(" (Parameter '")[0]),
        DllNotFoundException or TypeInitializationException => (ExitCodes.EnvironmentError, e.Message + " Run `looprpt env` for the diagnosis."),
        InvalidOperationException => (ExitCodes.Failure, e.Message),
        _ => (ExitCodes.Failure, $"{e.GetType().Name}: {e.Message}"),
    };
}

/// <summary>Where a running verb writes, whether it may draw live displays, and its cancellation.</summary>
internal sealed record CliContext(TextWriter Output, TextWriter Error, bool Interactive, CancellationToken CancellationToken)
{
    [ThreadStatic] private static CliContext? _current;

    public static CliContext? Current { get => _current; set => _current = value; }

    public static CliContext Require() => _current ?? new CliContext(Console.Out, Console.Error, false, default);
}
