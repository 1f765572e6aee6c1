using System.Text.Json;
using LoopRpt.Checkpoints;
using LoopRpt.Cli;
using LoopRpt.Tokenization;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Cli;

/// <summary>Every verb on one tiny model trained through the CLI (pretrain, gate and a LoopRPT step).</summary>
public sealed class CliVerbTests(TrainedModelFixture fx) : IClassFixture<TrainedModelFixture>
{
    [Fact]
    public void TrainWritesAModelDirectoryWithItsTokenizerAndPlainProgress()
    {
        Assert.True(fx.TrainResult.Code == ExitCodes.Success, fx.TrainResult.ToString());
        Assert.True(ModelDirectory.IsModelDirectory(fx.Model));
        var meta = ModelDirectory.ReadMeta(fx.Model);
        Assert.NotNull(meta.Tokenizer);
        Assert.Equal(["pretrain", "gate", "looprpt"], meta.Stages.Select(s => s.Name));
        Assert.Equal(9, meta.Step);
        Assert.Contains("progress stage=pretrain step=2/6", fx.TrainResult.Out);
        Assert.Contains("progress stage=looprpt step=1/1", fx.TrainResult.Out);
        Assert.Contains("summary completed=true global_step=9", fx.TrainResult.Out);
    }

    /// <summary>Issue 19 §3: each stage's loss under its own name, the LM loss for every stage, LoopRPT's compute per token.</summary>
    [Fact]
    public void TrainSummariesNameTheirQuantities()
    {
        var lines = fx.TrainResult.Out.Split('\n');
        var stages = lines.Where(l => l.StartsWith("stage index=", StringComparison.Ordinal)).ToArray();
        Assert.Equal(3, stages.Length);
        Assert.Matches(@"^stage index=1 name=pretrain steps=6/6 pretrain_objective=[0-9.]+ lm_loss=[0-9.]+ lm_loss_by_step=\[[0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+\] exit_step=[0-9.]+ tok_s=\d+ seconds=", stages[0]);
        Assert.Matches(@"^stage index=2 name=gate steps=2/2 gate_loss=[0-9.]+ lm_loss=[0-9.]+ ", stages[1]);
        // 2 rollouts, 4 loops: (2·4 + 2·3) / 4 = 3.5 forward passes per batch token.
        Assert.Matches(@"^stage index=3 name=looprpt steps=1/1 looprpt_objective=-?[0-9.]+ lm_loss=[0-9.]+ lm_loss_by_step=\[.+\] exit_step=[0-9.]+ reward=-?[0-9.]+ tok_s=\d+ fwd_per_tok=3.50 fwd_tok_s=\d+ ", stages[2]);
        var summary = lines.Single(l => l.StartsWith("summary ", StringComparison.Ordinal));
        Assert.Matches(@"^summary completed=true global_step=9 tokens=\d+ last_stage=looprpt looprpt_objective=-?[0-9.]+ lm_loss=[0-9.]+ threads=1 (slowdown=[0-9.]+ )?seconds=", summary);
        Assert.DoesNotContain("final_loss", fx.TrainResult.Out);
        Assert.Contains(" fwd_tok_s=", lines.Single(l => l.StartsWith("progress stage=looprpt", StringComparison.Ordinal)));
    }

    [Fact]
    public void ScoreWithQOneEqualsTheLastLoopLogLikelihoodComputedDirectly()
    {
        var r = CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--q", "1", "--per-token", "--threads", "1");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        using var doc = JsonDocument.Parse(r.Out);
        var rows = doc.RootElement.EnumerateArray().ToArray();
        Assert.Equal(40, rows.Length);
        Assert.Contains("score documents=40", r.Err);

        // Independent computation for document 3: BOS + ids, one forward, log p at the last loop.
        var loaded = ModelDirectory.Load(fx.Model);
        using var lm = loaded.Model;
        var tok = LoopRptTokenizer.Create(TokenizerSpec.FromJson(loaded.Meta.Tokenizer!.ToJsonString()));
        var ids = tok.Encode(CliRunner.CorpusLines()[3], addBos: true).Select(i => (long)i).ToArray();
        double expected;
        using (no_grad())
        {
            var output = lm.Forward(tensor(ids[..^1], [1, ids.Length - 1]));
            expected = lm.GoldLogProbs(output.Hidden[^1], tensor(ids[1..], [1, ids.Length - 1])).to_type(ScalarType.Float64).sum().item<double>();
        }
        var row = rows[3];
        Assert.Equal(ids.Length - 1, row.GetProperty("tokens").GetInt32());
        // A sum of float32 log-probabilities (about -256.7 here) from two paths (one pass above, the CLI's windows and
        // batches): each term can round differently in the last bit, so the bound is relative to the sum (1e-5 of it,
        // 2.6e-3 here). Four decimal places failed on an AVX-512 machine by 1.2e-5.
        Tolerance.AssertClose(expected, row.GetProperty("log_likelihood").GetDouble(), relative: 1e-5, absolute: 1e-4);
        Tolerance.AssertClose(Math.Exp(-expected / (ids.Length - 1)), row.GetProperty("perplexity").GetDouble(), absolute: 1e-4);
        Assert.All(row.GetProperty("exit_steps").EnumerateArray(), e => Assert.Equal(lm.Config.TotalUtSteps, e.GetInt32()));
    }

    [Fact]
    public void AdaptiveScoreMatchesTheFullDepthReadOutAtEachTokensQExitStep()
    {
        var r = CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--q", "0.5", "--per-token");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        using var doc = JsonDocument.Parse(r.Out);
        var row = doc.RootElement[5];

        // Reference: every loop for every token, then read each token out at its Q-exit step (docs/method.md §2).
        var loaded = ModelDirectory.Load(fx.Model);
        using var lm = loaded.Model;
        var tok = LoopRptTokenizer.Create(TokenizerSpec.FromJson(loaded.Meta.Tokenizer!.ToJsonString()));
        var ids = tok.Encode(CliRunner.CorpusLines()[5], addBos: true).Select(i => (long)i).ToArray();
        long[] steps;
        double[] expected;
        using (no_grad())
        {
            var output = lm.Forward(tensor(ids[..^1], [1, ids.Length - 1]));
            var q = LoopRpt.Model.ExitDistribution.QExitStep(output.ExitProbabilities(), 0.5);
            steps = q.data<long>().ToArray();
            expected = lm.GoldLogProbsPerStep(output, tensor(ids[1..], [1, ids.Length - 1])).gather(-1, q.unsqueeze(-1)).to_type(ScalarType.Float64)
                .flatten().data<double>().ToArray();
        }
        // The adaptive pass equals the reference exactly for a token no earlier token exited before (docs/adaptive-exit.md,
        // "The approximation": later tokens attend to an exited token's exit-loop keys/values). Those tokens must agree in
        // exit step and log-probability; the others follow the documented approximation and are not compared.
        var exits = row.GetProperty("exit_steps").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var logProbs = row.GetProperty("token_log_probs").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        Assert.Equal(steps.Length, exits.Length);
        int exact = 0;
        long earliest = long.MaxValue;
        for (int p = 0; p < steps.Length; p++)
        {
            if (earliest >= steps[p])
            {
                exact++;
                Assert.Equal((int)steps[p] + 1, exits[p]);
                Tolerance.AssertClose(expected[p], logProbs[p], $"position {p}");
            }
            earliest = Math.Min(earliest, steps[p]);
        }
        Assert.True(exact >= 2, $"only {exact} positions are exact by the rule; the comparison would say little");
    }

    [Fact]
    public void ScoreWritesCsvToAFile()
    {
        var csv = Path.Combine(CliRunner.TempDir(), "scores.csv");
        var r = CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--format", "Csv", "--q", "0.5", "--out", csv);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        var lines = File.ReadAllLines(csv);
        Assert.Equal("index,tokens,log_likelihood,perplexity,mean_exit_step", lines[0]);
        Assert.Equal(41, lines.Length);
        var exit = double.Parse(lines[1].Split(',')[4], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(exit, 1, 4);
        Assert.Contains("score documents=40", r.Out);
    }

    [Fact]
    public void EvaluateWritesThePaperTables()
    {
        var dir = CliRunner.TempDir();
        var md = Path.Combine(dir, "eval.md");
        var csv = Path.Combine(dir, "eval.csv");
        var r = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--q", "0.5,1", "--out", md, "--csv", csv);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        foreach (var s in new[] { "| s1 | s2 | s3 | s4 |", "| all tokens |", "| H > 0.5 nats |", "| H > 1 nats |", "| H > 1.5 nats |", "peak step", "q=0.5 acc @ exit" })
            Assert.Contains(s, r.Out);
        Assert.DoesNotContain("Easy (H>", r.Out);
        Assert.Equal(r.Out, File.ReadAllText(md));
        Assert.StartsWith("model,bucket,tokens,kind,x,accuracy,mean_exit_step", File.ReadAllText(csv));
    }

    /// <summary>Issue 16 §1: --pass adaptive takes the Q-exit figures from the compute-saving scorer and says so; q = 1 agrees with full depth.</summary>
    [Fact]
    public void EvaluatePassFullOrAdaptive()
    {
        var full = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--q", "0.5,1", "--threads", "1");
        var adaptive = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--q", "0.5,1", "--pass", "adaptive", "--threads", "1");
        Assert.True(full.Code == ExitCodes.Success, full.ToString());
        Assert.True(adaptive.Code == ExitCodes.Success, adaptive.ToString());
        Assert.Contains("every loop computed", full.Out);
        Assert.Contains("adaptive pass", adaptive.Out);
        // The per-step table is the same full-depth computation in both.
        string Steps(string o) => string.Join("\n", o.Split('\n').SkipWhile(l => !l.StartsWith("| bucket |", StringComparison.Ordinal)).TakeWhile(l => l.StartsWith('|')));
        Assert.Equal(Steps(full.Out), Steps(adaptive.Out));
        var bad = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--pass", "sometimes");
        Assert.True(bad.Code == ExitCodes.Usage, bad.ToString());
        Assert.Contains("--pass", bad.Err);
    }

    /// <summary>Issue 19 §4: --buckets takes thresholds or top fractions; quantile buckets hold their share of the tokens.</summary>
    [Fact]
    public void EvaluateTakesBucketThresholdsOrTopFractions()
    {
        var top = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--q", "0.5,1", "--buckets", "top:50,30,20");
        Assert.True(top.Code == ExitCodes.Success, top.ToString());
        var rows = top.Out.Split('\n').Where(l => l.StartsWith("| top ", StringComparison.Ordinal)).ToArray();
        Assert.Equal(3 * 2, rows.Length);                     // the accuracy table and the summary table
        var all = long.Parse(top.Out.Split('\n').First(l => l.StartsWith("| all tokens |", StringComparison.Ordinal)).Split('|')[2]);
        foreach (var (label, f) in new[] { ("top 50 %", 0.5), ("top 30 %", 0.3), ("top 20 %", 0.2) })
        {
            var row = rows.First(l => l.StartsWith("| " + label, StringComparison.Ordinal));
            Assert.Matches(@"\(H > [0-9.]+ nats\)", row);
            long n = long.Parse(row.Split('|')[2]);
            Assert.InRange(n, (long)Math.Ceiling(f * all) - 3, (long)Math.Ceiling(f * all));      // ties at the cut fall outside
        }
        var custom = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--seq-len", "16", "--q", "1", "--buckets", "entropy:1,2,3.5");
        Assert.True(custom.Code == ExitCodes.Success, custom.ToString());
        Assert.Contains("| H > 3.5 nats |", custom.Out);
        foreach (var bad in new[] { "top:20,30,50", "entropy:1,2", "median", "top:0,10,5" })
        {
            var r = CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--buckets", bad);
            Assert.True(r.Code == ExitCodes.Usage, r.ToString());
            Assert.Contains("--buckets", r.Err);
        }
    }

    [Fact]
    public void ParetoWritesTableCsvAndPlot()
    {
        var dir = Path.Combine(CliRunner.TempDir(), "pareto");
        var r = CliRunner.Run("pareto", "--model", fx.Model, "--model", fx.Model, "--labels", "a,b", "--input", fx.Corpus, "--seq-len", "16", "--q", "0.2,0.6,1", "--out-dir", dir);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.StartsWith("<svg", File.ReadAllText(Path.Combine(dir, "pareto.svg")));
        // Issue 19 §5: one narrow table per bucket (a column per model), not one wide table.
        var md = File.ReadAllText(Path.Combine(dir, "pareto.md"));
        Assert.Contains("### all tokens (", md);
        Assert.Contains("### H > 1.5 nats (", md);
        Assert.Contains("| read-out | a | b |", md);
        Assert.Contains("| q=0.6 | ", md);
        Assert.All(md.Split('\n').Where(l => l.StartsWith('|')), l => Assert.Equal(4, l.Count(ch => ch == '|')));
        Assert.Equal(1 + 2 * 4 * (4 + 3), File.ReadAllLines(Path.Combine(dir, "pareto.csv")).Length);   // header + models × buckets × (steps + qs)
    }

    [Fact]
    public void ParetoWithMismatchedLabelsIsAUsageError()
    {
        var r = CliRunner.Run("pareto", "--model", fx.Model, "--labels", "a,b", "--input", fx.Corpus, "--out-dir", CliRunner.TempDir());
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("--labels", r.Err);
    }

    [Fact]
    public void GenerateReportsLoopsPerToken()
    {
        var r = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "the cat", "-n", "6", "--no-stop", "--q", "1", "--format", "Json");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        using var doc = JsonDocument.Parse(r.Out);
        var tokens = doc.RootElement.GetProperty("tokens").EnumerateArray().ToArray();
        Assert.Equal(6, tokens.Length);
        Assert.All(tokens, t => Assert.Equal(4, t.GetProperty("loops").GetInt32()));        // q = 1: every loop
        // bitwise: q = 1: every token runs all 4 loops, a mean of equal integers
        Assert.Equal(4.0, doc.RootElement.GetProperty("mean_loops").GetDouble());
        Assert.Equal(string.Concat(tokens.Select(t => t.GetProperty("text").GetString())), doc.RootElement.GetProperty("text").GetString());
    }

    [Fact]
    public void GenerateTextListsEveryToken()
    {
        var r = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x=", "-n", "5", "--no-stop", "--q", "0.3");
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        var rows = r.Out.Split('\n').SkipWhile(l => l != "token\tloops\tid\ttext").Skip(1).TakeWhile(l => l.Length > 0 && char.IsDigit(l[0])).ToArray();
        Assert.Equal(5, rows.Length);
        Assert.All(rows, l => Assert.InRange(int.Parse(l.Split('\t')[1]), 1, 4));
        Assert.Contains("generate tokens=5", r.Out);

        var shared = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x=", "-n", "5", "--no-stop", "--q", "0.3", "--kv-cache", "LastLoop", "--format", "Json");
        Assert.True(shared.Code == ExitCodes.Success, shared.ToString());
        using var doc = JsonDocument.Parse(shared.Out);
        Assert.Equal(5, doc.RootElement.GetProperty("tokens").GetArrayLength());
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x=", "--kv-cache", "Everywhere").Code);
    }

    [Fact]
    public void MissingModelIsAnInputErrorAndACorruptOneAModelError()
    {
        var r = CliRunner.Run("score", "--model", "/nonexistent/model", "--input", fx.Corpus);
        Assert.Equal(ExitCodes.InputError, r.Code);
        Assert.Contains("does not exist", r.Err);

        var bad = CliRunner.TempDir();
        foreach (var f in Directory.GetFiles(fx.Model)) File.Copy(f, Path.Combine(bad, Path.GetFileName(f)));
        File.WriteAllBytes(Path.Combine(bad, "model.safetensors"), [1, 2, 3]);
        r = CliRunner.Run("generate", "--model", bad, "--prompt", "x");
        Assert.Equal(ExitCodes.ModelError, r.Code);
        Assert.Contains("model.safetensors", r.Err);
    }

    [Fact]
    public void BadOptionValuesAreUsageErrors()
    {
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("score", "--model", fx.Model, "--input", fx.Corpus, "--q", "1.5").Code);
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("evaluate", "--model", fx.Model, "--input", fx.Corpus, "--q", "0.5,x").Code);
        var r = CliRunner.Run("generate", "--model", fx.Model, "--prompt", "x", "--top-p", "0");
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Contains("--top-p", r.Err);
    }

    /// <summary>Issue 20: a directory without a tokenizer works with --tokenizer FILE or raw --ids, for generate and score.</summary>
    [Fact]
    public void GenerateAndScoreTakeATokenizerFileOrRawIds()
    {
        // A copy of the model without its tokenizer, and the tokenizer as a separate file.
        var bare = CliRunner.TempDir();
        foreach (var f in Directory.GetFiles(fx.Model)) File.Copy(f, Path.Combine(bare, Path.GetFileName(f)));
        var meta = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(bare, "meta.json")))!.AsObject();
        var tokFile = Path.Combine(CliRunner.TempDir(), "tok.json");
        File.WriteAllText(tokFile, meta["tokenizer"]!.ToJsonString());
        meta.Remove("tokenizer");
        File.WriteAllText(Path.Combine(bare, "meta.json"), meta.ToJsonString());
        Assert.Equal(ExitCodes.ModelError, CliRunner.Run("generate", "--model", bare, "--prompt", "x=").Code);

        string[] gen = ["-n", "5", "--no-stop", "--q", "1", "--format", "Json"];
        var reference = CliRunner.Run(["generate", "--model", fx.Model, "--prompt", "x=", .. gen]);
        var withFile = CliRunner.Run(["generate", "--model", bare, "--prompt", "x=", "--tokenizer", tokFile, .. gen]);
        Assert.True(reference.Code == ExitCodes.Success, reference.ToString());
        Assert.True(withFile.Code == ExitCodes.Success, withFile.ToString());
        using var refDoc = JsonDocument.Parse(reference.Out);
        using var fileDoc = JsonDocument.Parse(withFile.Out);
        int[] Ids(JsonDocument d) => d.RootElement.GetProperty("tokens").EnumerateArray().Select(t => t.GetProperty("id").GetInt32()).ToArray();
        int[] promptIds = refDoc.RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(Ids(refDoc), Ids(fileDoc));
        Assert.Equal(refDoc.RootElement.GetProperty("text").GetString(), fileDoc.RootElement.GetProperty("text").GetString());

        // Raw ids: the same prompt ids give the same continuation, with no tokenizer at all (no text).
        var raw = CliRunner.Run(["generate", "--model", bare, "--ids", string.Join(",", promptIds), .. gen]);
        Assert.True(raw.Code == ExitCodes.Success, raw.ToString());
        using var rawDoc = JsonDocument.Parse(raw.Out);
        Assert.Equal(Ids(refDoc), Ids(rawDoc));
        Assert.Equal(JsonValueKind.Null, rawDoc.RootElement.GetProperty("text").ValueKind);
        // bitwise: q = 1: every token runs every loop, a ratio of equal integers
        Assert.Equal(1.0, rawDoc.RootElement.GetProperty("compute_fraction").GetDouble());      // q = 1: every loop
        Assert.True(rawDoc.RootElement.GetProperty("tokens_per_second").GetDouble() > 0);

        // score --ids on the bare copy = score of the text whose encoding (with BOS) is those ids, on the original.
        var doc = Path.Combine(CliRunner.TempDir(), "doc.txt");
        File.WriteAllText(doc, "x=\n");
        var byText = CliRunner.Run("score", "--model", fx.Model, "--input", doc, "--q", "1");
        var byIds = CliRunner.Run("score", "--model", bare, "--ids", string.Join(" ", promptIds), "--q", "1");
        Assert.True(byText.Code == ExitCodes.Success, byText.ToString());
        Assert.True(byIds.Code == ExitCodes.Success, byIds.ToString());
        double Ll(string json) => JsonDocument.Parse(json).RootElement[0].GetProperty("log_likelihood").GetDouble();
        Tolerance.AssertClose(Ll(byText.Out), Ll(byIds.Out), absolute: 1e-6);
        Assert.Matches(@"compute_fraction=1\.000 .*elapsed_s=[0-9.]+ tok_s=[0-9.]+", byIds.Err);

        // bfloat16 generation from ids runs and reports its speed.
        var bf16 = CliRunner.Run("generate", "--model", bare, "--ids", string.Join(",", promptIds), "-n", "3", "--no-stop", "--dtype", "bfloat16");
        Assert.True(bf16.Code == ExitCodes.Success, bf16.ToString());
        Assert.Matches(@"generate tokens=3 .*compute_fraction=[0-9.]+ .*tok_s=[0-9.]+", bf16.Out);

        // --bf16-compute forces either mode; anything else is a usage error naming the accepted values.
        foreach (var mode in new[] { "native", "float32", "auto" })
        {
            var forced = CliRunner.Run("generate", "--model", bare, "--ids", string.Join(",", promptIds), "-n", "2", "--no-stop", "--dtype", "bfloat16", "--bf16-compute", mode);
            Assert.True(forced.Code == ExitCodes.Success, $"--bf16-compute {mode}: {forced}");
        }
        var badCompute = CliRunner.Run("score", "--model", bare, "--ids", "1,2", "--dtype", "bfloat16", "--bf16-compute", "fp8");
        Assert.Equal(ExitCodes.Usage, badCompute.Code);
        Assert.Contains("expected auto, native or float32", badCompute.Err);

        // Bad ids and missing/duplicate inputs are usage errors; a missing tokenizer file an input error.
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("generate", "--model", bare, "--ids", "1,x").Code);
        var outside = CliRunner.Run("score", "--model", bare, "--ids", "1,100000");
        Assert.Equal(ExitCodes.Usage, outside.Code);
        Assert.Contains("outside the model's vocabulary", outside.Err);
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("generate", "--model", bare, "--ids", "1", "--prompt", "x").Code);
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("generate", "--model", bare).Code);
        Assert.Equal(ExitCodes.Usage, CliRunner.Run("score", "--model", bare).Code);
        Assert.Equal(ExitCodes.InputError, CliRunner.Run("generate", "--model", bare, "--prompt", "x", "--tokenizer", "/nonexistent/tok.json").Code);
    }
}
