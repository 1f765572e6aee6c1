using LoopRpt.Cli;
using LoopRpt.Cli.Models;

namespace LoopRpt.Tests.Cli;

/// <summary>Issue 19 §1: the default thread count does not oversubscribe a busy machine, and says why.</summary>
public sealed class ThreadPolicyTests
{
    private const long Large = 10_000_000;

    [Fact]
    public void AnExplicitCountOrOmpNumThreadsWins()
    {
        Assert.Equal(new ThreadChoice(3, "--threads 3", false), ThreadPolicy.Choose(3, 2, 2, 2, 9.0, 100, "5"));
        var omp = ThreadPolicy.Choose(0, 8, 8, 8, 0.0, Large, "5");
        Assert.Equal((5, false), (omp.Threads, omp.Automatic));
        Assert.Contains("OMP_NUM_THREADS=5", omp.Reason);
        Assert.True(ThreadPolicy.Choose(0, 8, 8, 8, 0.0, Large, "junk").Automatic);
    }

    [Fact]
    public void SmallModelsRunOnOneThread()
    {
        var c = ThreadPolicy.Choose(0, 16, 32, 32, 0.0, 500_000, null);
        Assert.Equal(1, c.Threads);
        Assert.Contains("0.5M parameters", c.Reason);
        Assert.Equal(1, ThreadPolicy.Choose(0, 16, 32, 32, 0.0, ThreadPolicy.SmallModelParameters - 1, null).Threads);
        Assert.Equal(16, ThreadPolicy.Choose(0, 16, 32, 32, 0.0, ThreadPolicy.SmallModelParameters, null).Threads);
    }

    [Fact]
    public void BusyCoresAreLeftToTheJobsUsingThem()
    {
        // The issue's case: 2 cores, one other job running → one thread, not libtorch's two.
        var busy = ThreadPolicy.Choose(0, 2, 2, 2, 1.02, Large, null);
        Assert.Equal(1, busy.Threads);
        Assert.Contains("2 physical cores minus 1 busy", busy.Reason);
        Assert.Contains("1.02", busy.Reason);
        Assert.Equal(2, ThreadPolicy.Choose(0, 2, 2, 2, 0.3, Large, null).Threads);          // idle: every core
        Assert.Equal(1, ThreadPolicy.Choose(0, 2, 2, 2, 12.0, Large, null).Threads);         // overloaded: still one
        Assert.Equal(6, ThreadPolicy.Choose(0, 8, 16, 16, 2.4, Large, null).Threads);        // SMT: physical cores count
        Assert.Equal(4, ThreadPolicy.Choose(0, 4, 8, 8, null, Large, null).Threads);         // no load average: the cores
        // A container limited to 4 of the host's 64 processors sees the host's load: its share is load × 4 / 64.
        var container = ThreadPolicy.Choose(0, 32, 4, 64, 32.0, Large, null);
        Assert.Equal(2, container.Threads);
        Assert.Contains("2.00 of this process's 4 processors", container.Reason);
    }

    [Fact]
    public void EnvPrintsTheDefaultAndWhy()
    {
        var r = CliRunner.Run("env");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        var line = r.Out.Split('\n').Single(l => l.StartsWith("threads ", StringComparison.Ordinal));
        Assert.Matches(@"threads +\d+ by default \(automatic: \d+ physical cores? minus \d+ busy \(1-minute load average [0-9.]+", line);
        Assert.Contains("--threads N overrides", line);
        Assert.Contains("libtorch's own default here", r.Out);
    }

    [Fact]
    public void TrainSaysWhichThreadCountItChose()
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "c.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines(20));
        string[] Args(string model) => CliRunner.TinyTrain(corpus, Path.Combine(dir, model), "pretrain:2").Where(a => a != "--threads" && a != "1").ToArray();
        var r = CliRunner.Run(Args("m"));
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Contains("threads=1 (automatic: a model of", r.Out);          // the test model is tiny
        Assert.Contains(" threads=1 ", r.Out.Split('\n').Single(l => l.StartsWith("summary ", StringComparison.Ordinal)));
        r = CliRunner.Run([.. Args("m2"), "--threads", "1"]);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Contains("threads=1 (--threads 1)", r.Out);
    }
}
