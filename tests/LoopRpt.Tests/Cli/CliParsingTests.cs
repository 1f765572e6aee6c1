using LoopRpt.Cli;

namespace LoopRpt.Tests.Cli;

public sealed class CliParsingTests
{
    [Fact]
    public void NoVerbIsAUsageError()
    {
        var r = CliRunner.Run();
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("looprpt: error:", r.Err);
    }

    [Fact]
    public void UnknownOptionIsAUsageErrorNamingIt()
    {
        var r = CliRunner.Run("score", "--model", "m", "--input", "x.txt", "--bogus", "1");
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("--bogus", r.Err);
        Assert.Contains("looprpt score --help", r.Err);
    }

    [Fact]
    public void NonNumericValueIsAUsageError()
    {
        var r = CliRunner.Run("train", "--input", "x.txt", "--out", "m", "--batch-size", "many");
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("many", r.Err);
    }

    [Fact]
    public void HelpListsEveryVerb()
    {
        var r = CliRunner.Run("--help");
        Assert.Equal(ExitCodes.Success, r.Code);
        foreach (var verb in new[] { "env", "tokenizer", "train", "evaluate", "pareto", "score", "generate" })
            Assert.Contains(verb, r.Out);
    }

    [Fact]
    public void EnvReportsVersionsAndTheNativeLoad()
    {
        var r = CliRunner.Run("env", "--device", "cpu");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Contains("TorchSharp", r.Out);
        Assert.Contains("libtorch-cpu-linux-x64 2.10.0", r.Out);
        Assert.Contains("native library    loaded", r.Out);
        Assert.Contains("OpenMP spinning   ", r.Out);
        Assert.Contains("huge pages        ", r.Out);
        Assert.Contains("matmul checked", r.Out);
    }

    [Fact]
    public void EnvWithAnUnknownDeviceIsAUsageError()
    {
        var r = CliRunner.Run("env", "--device", "tpu");
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("'tpu'", r.Err);
    }

    [Fact]
    public void ExceptionsMapToTheDocumentedExitCodes()
    {
        Assert.Equal(ExitCodes.InputError, CliApp.Classify(new FileNotFoundException("x")).Code);
        Assert.Equal(ExitCodes.InputError, CliApp.Classify(new DirectoryNotFoundException("x")).Code);
        Assert.Equal(ExitCodes.ModelError, CliApp.Classify(new InvalidDataException("x")).Code);
        Assert.Equal(ExitCodes.Usage, CliApp.Classify(new ArgumentOutOfRangeException("x")).Code);
        Assert.Equal(ExitCodes.EnvironmentError, CliApp.Classify(new DllNotFoundException("x")).Code);
        Assert.Equal(ExitCodes.Cancelled, CliApp.Classify(new OperationCanceledException()).Code);
        Assert.Equal(ExitCodes.Failure, CliApp.Classify(new InvalidOperationException("diverged")).Code);
        Assert.Equal(ExitCodes.Failure, CliApp.Classify(new NullReferenceException()).Code);
        Assert.Equal(ExitCodes.ModelError, CliApp.Classify(CliException.Model("m")).Code);
    }
}
