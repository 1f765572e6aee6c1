namespace LoopRpt.Cli;

/// <summary>
/// Process exit codes of <c>looprpt</c> (documented in README.md, "Command-line tool").
/// </summary>
public static class ExitCodes
{
    /// <summary>The command did what was asked.</summary>
    public const int Success = 0;
    /// <summary>An unexpected failure (a bug, or an error no other code describes); the message and the exception type are printed.</summary>
    public const int Failure = 1;
    /// <summary>The command line is wrong: unknown verb or option, a value that does not parse or is out of range, an output path that cannot be written (or a `train --out` folder of other files, which saving would replace).</summary>
    public const int Usage = 2;
    /// <summary>An input is unusable: a missing file or folder, a bad encoding, a missing column, an empty corpus, too few tokens.</summary>
    public const int InputError = 3;
    /// <summary>A model, checkpoint or tokenizer file is missing, corrupt (e.g. config.json lacks a required key) or incompatible (or a resume does not match the plan).</summary>
    public const int ModelError = 4;
    /// <summary>The environment is unusable: TorchSharp's native library does not load, or the requested device is unavailable.</summary>
    public const int EnvironmentError = 5;
    /// <summary>
    /// Numbers went bad: training diverged (non-finite steps, or the loss-spike rule; the last checkpoint whose loss was
    /// sane is kept), or a model's weights or outputs are not finite (NaN/Inf), so its scores would be meaningless.
    /// </summary>
    public const int NumericalError = 6;
    /// <summary>Cancelled (Ctrl+C); a checkpoint was written when a checkpoint folder was set.</summary>
    public const int Cancelled = 130;
}

/// <summary>An error the tool reports with a chosen exit code and a message for the user (no stack trace).</summary>
public sealed class CliException(int exitCode, string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>The process exit code (<see cref="ExitCodes"/>).</summary>
    public int ExitCode { get; } = exitCode;

    /// <summary>A command-line mistake (exit code <see cref="ExitCodes.Usage"/>).</summary>
    public static CliException Usage(string message) => new(ExitCodes.Usage, message);

    /// <summary>An unusable input (exit code <see cref="ExitCodes.InputError"/>).</summary>
    public static CliException Input(string message, Exception? inner = null) => new(ExitCodes.InputError, message, inner);

    /// <summary>An unusable model or checkpoint (exit code <see cref="ExitCodes.ModelError"/>).</summary>
    public static CliException Model(string message, Exception? inner = null) => new(ExitCodes.ModelError, message, inner);

    /// <summary>Diverged training or non-finite weights/outputs (exit code <see cref="ExitCodes.NumericalError"/>).</summary>
    public static CliException Numerical(string message, Exception? inner = null) => new(ExitCodes.NumericalError, message, inner);
}
