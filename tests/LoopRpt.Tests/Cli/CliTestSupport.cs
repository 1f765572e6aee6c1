using LoopRpt.Cli;

namespace LoopRpt.Tests.Cli;

/// <summary>Runs the tool in-process and builds tiny inputs.</summary>
internal static class CliRunner
{
    public sealed record Result(int Code, string Out, string Err)
    {
        public override string ToString() => $"exit {Code}\n--- stdout\n{Out}\n--- stderr\n{Err}";
    }

    public static Result Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = CliApp.Run(args, o, e);
        return new Result(code, o.ToString(), e.ToString());
    }

    /// <summary>Lines of a tiny corpus with some structure (so a few steps of training change something).</summary>
    public static string[] CorpusLines(int n = 40)
        => Enumerable.Range(0, n).Select(i => $"the cat {i % 7} sat on mat {(i * 3) % 5}; x={i % 10};y=x+{i % 3};?y={(i % 10 + i % 3) % 10}").ToArray();

    public static string TempDir() => TestUtil.TempDir("looprpt-cli-tests");

    /// <summary>The arguments of a fast training run on <paramref name="corpus"/> into <paramref name="model"/>.</summary>
    public static string[] TinyTrain(string corpus, string model, string stages = "pretrain:4,gate:2", params string[] extra)
        => ["train", "--input", corpus, "--out", model, "--stages", stages, "--vocab-size", "280", "--hidden-size", "32", "--batch-size", "2",
            "--seq-len", "16", "--log-every", "2", "--progress", "Plain", "--threads", "1", .. extra];
}

/// <summary>One tiny model trained once through the CLI and shared by the verb tests.</summary>
public sealed class TrainedModelFixture : IDisposable
{
    public TrainedModelFixture()
    {
        Root = CliRunner.TempDir();
        Corpus = Path.Combine(Root, "corpus.txt");
        File.WriteAllLines(Corpus, CliRunner.CorpusLines());
        Model = Path.Combine(Root, "model");
        // looprpt at lr 1e-3, as before the published 5e-6 became the looprpt default: the fixture model stays the same.
        TrainResult = CliRunner.Run(CliRunner.TinyTrain(Corpus, Model, "pretrain:6,gate:2,looprpt:1:1e-3", "--rollouts", "2"));
    }

    public string Root { get; }
    public string Corpus { get; }
    public string Model { get; }
    internal CliRunner.Result TrainResult { get; }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}
