using LoopRpt.QuickStart;

namespace LoopRpt.Tests.Cli;

public sealed class QuickStartTests
{
    [Fact]
    public void BindingLinesHoldTheirComputedAnswer()
    {
        foreach (var line in BindingCorpus.Lines(200, seed: 5))
        {
            // Recompute the answer from the statements: an independent interpreter of the line.
            var values = new Dictionary<string, int>();
            var parts = line.Text.Split(';');
            foreach (var st in parts[..^1])
            {
                var (name, expr) = (st.Split('=')[0], st.Split('=')[1]);
                values[name] = expr.Length == 1 ? expr[0] - '0'
                    : expr[1] switch
                    {
                        '+' => (values[expr[..1]] + (expr[2] - '0')) % 10,
                        '-' => (values[expr[..1]] - (expr[2] - '0') + 10) % 10,
                        _ => values[expr[..1]] * (expr[2] - '0') % 10,
                    };
            }
            var query = parts[^1];                                   // "?a=4"
            Assert.Equal(values[query[1..2]], line.Text[line.AnswerIndex] - '0');
            Assert.InRange(line.Depth, 0, BindingCorpus.MaxDepth);
        }
    }

    [Fact]
    public void QuickModeRunsTheWholePipelineAndWritesTablesAndPlots()
    {
        var dir = CliRunner.TempDir();
        var log = new StringWriter();
        var result = QuickStartPipeline.Run(QuickStartSettings.Quick(), dir, log);
        foreach (var f in new[] { "README.md", "accuracy-before.md", "accuracy-after.md", "answers-by-depth.md", "results.csv", "pareto.svg", "pareto-before.svg", "pareto-after.svg", "tokenizer.json" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        Assert.Equal(4, result.Before.Steps);
        Assert.Equal(result.Before["All"].Tokens, result.After["All"].Tokens);
        Assert.Contains("| s1 | s2 | s3 | s4 |", File.ReadAllText(Path.Combine(dir, "accuracy-after.md")));
        Assert.Contains("progress stage=looprpt", log.ToString());
        // The trained models are ordinary model directories the CLI can use.
        var r = CliRunner.Run("score", "--model", Path.Combine(dir, "models", "looprpt"), "--input", Path.Combine(dir, "heldout.txt"), "--format", "Csv");
        Assert.True(r.Code == LoopRpt.Cli.ExitCodes.Success, r.ToString());
    }
}
