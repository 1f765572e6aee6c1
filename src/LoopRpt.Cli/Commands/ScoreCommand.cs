using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using LoopRpt.Cli.Input;
using LoopRpt.Cli.Models;
using LoopRpt.Inference;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Cli.Commands;

/// <summary>Output format of <c>looprpt score</c>.</summary>
public enum ScoreFormat
{
    /// <summary>A JSON array, one object per document.</summary>
    Json,
    /// <summary>CSV with a header row, one row per document.</summary>
    Csv,
}

/// <summary>One document's scores.</summary>
/// <param name="Index">0-based document index in input order.</param>
/// <param name="Tokens">Predicted tokens (the document's tokens after the BOS id).</param>
/// <param name="LogLikelihood">Sum of log p(token) at each token's exit (nats).</param>
/// <param name="Perplexity">exp(-LogLikelihood / Tokens); NaN for an empty document.</param>
/// <param name="MeanExitStep">Mean 1-indexed exit step.</param>
/// <param name="ExitSteps">Per-token exit step (1-indexed), when requested.</param>
public sealed record DocumentScore(int Index, int Tokens, double LogLikelihood, double Perplexity, double MeanExitStep, int[]? ExitSteps);

/// <summary><c>looprpt score</c>: per-document log-likelihood, perplexity and exit steps under Q-exit, as JSON or CSV.</summary>
internal static class ScoreCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var input = CommonOptions.Input(required: false);
        var ids = CommonOptions.Ids();
        var tokenizer = CommonOptions.TokenizerFile();
        var column = CommonOptions.Column();
        var docs = CommonOptions.Documents();
        var q = new Option<double>("--q") { Description = "Q-exit threshold in [0, 1]: each token exits at the first loop whose exit CDF reaches q (1 = last loop).", DefaultValueFactory = _ => 0.5 };
        var format = new Option<ScoreFormat>("--format") { Description = "Json or Csv.", DefaultValueFactory = _ => ScoreFormat.Json };
        var perToken = new Option<bool>("--per-token") { Description = "Include each token's exit step (JSON only)." };
        var context = new Option<int>("--context") { Description = "Longest window per forward pass (longer documents are scored in windows sharing one token).", DefaultValueFactory = _ => 512 };
        var output = new Option<string?>("--out", "-o") { Description = "File to write (default: standard output)." };
        var device = CommonOptions.Device();
        var dtype = CommonOptions.DType();
        var bf16Compute = CommonOptions.BFloat16Compute();
        var threads = CommonOptions.Threads();
        var cmd = new Command("score", "Score documents: log-likelihood, perplexity and exit steps per document.") { model, input, ids, tokenizer, column, docs, q, format, perToken, context, output, device, dtype, bf16Compute, threads };
        cmd.SetAction(pr =>
        {
            var ctx = CliContext.Require();
            double qv = pr.GetValue(q) is var x and >= 0 and <= 1 ? x : throw CliException.Usage("--q must lie in [0, 1].");
            int ctxLen = CommonOptions.AtLeast(pr.GetValue(context), 2, "--context");
            if (pr.GetValue(perToken) && pr.GetValue(format) == ScoreFormat.Csv) throw CliException.Usage("--per-token needs --format json.");
            var outPath = pr.GetValue(output) is { } op ? OutputPaths.File(op, "--out") : null;
            string[]? inputs = pr.GetValue(input) is { Length: > 0 } given ? given : null;
            string? idsText = pr.GetValue(ids);
            if ((inputs is null) == (idsText is null)) throw CliException.Usage("Give the documents as --input FILE or one document as --ids 1,5,9 (exactly one of them).");
            if (pr.GetValue(tokenizer) is { } tf && !File.Exists(tf)) throw CliException.Input($"Tokenizer file '{tf}' does not exist.");
            var texts = inputs is null ? null : Corpus.Read(inputs, pr.GetValue(docs), pr.GetValue(column));
            Devices.SetThreads(pr.GetValue(threads));
            using var session = ModelSession.Load(pr.GetRequiredValue(model), pr.GetValue(device)!, pr.GetValue(dtype)!, ctx.Error, pr.GetValue(bf16Compute)!);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            List<DocumentScore> scores;
            if (texts is null)
                scores = [Score(session.Model, CommonOptions.ParseIds(idsText!, session.Model.Config.VocabSize), 0, qv, ctxLen, pr.GetValue(perToken))];
            else
            {
                var codec = session.CodecOrFile(pr.GetValue(tokenizer)) ?? session.RequireCodec();
                scores = texts.Select((t, i) => Score(session.Model, codec.Encode(t, addBos: true), i, qv, ctxLen, pr.GetValue(perToken))).ToList();
            }
            double elapsed = clock.Elapsed.TotalSeconds;
            var text = pr.GetValue(format) == ScoreFormat.Json ? ToJson(scores) : ToCsv(scores);
            if (outPath is null) ctx.Output.Write(text);
            else
            {
                CommonOptions.EnsureParent(outPath);
                File.WriteAllText(outPath, text);
            }
            long n = scores.Sum(s => (long)s.Tokens);
            double ll = scores.Sum(s => s.LogLikelihood);
            double exit = scores.Sum(s => s.Tokens == 0 ? 0 : s.MeanExitStep * s.Tokens);
            int loops = session.Model.Config.TotalUtSteps;
            var summary = string.Create(CultureInfo.InvariantCulture,
                $"score documents={scores.Count} tokens={n} nll={(n == 0 ? double.NaN : -ll / n):F4} ppl={(n == 0 ? double.NaN : Math.Exp(-ll / n)):F3} mean_exit_step={(n == 0 ? double.NaN : exit / n):F3} loops={loops} compute_fraction={(n == 0 ? double.NaN : exit / n / loops):F3} q={qv} elapsed_s={elapsed:F2} tok_s={n / Math.Max(elapsed, 1e-9):F1}");
            (outPath is null ? ctx.Error : ctx.Output).WriteLine(summary);
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary>
    /// Scores one document in windows of at most <paramref name="context"/> tokens (fresh context per window, windows
    /// sharing one token) with the compute-saving adaptive-exit scorer: a token stops computing once its exit CDF
    /// reaches q (docs/adaptive-exit.md).
    /// </summary>
    internal static DocumentScore Score(OuroForCausalLM lm, int[] ids, int index, double q, int context, bool perToken)
    {
        if (ids.Length < 2) return new DocumentScore(index, 0, 0, double.NaN, double.NaN, perToken ? [] : null);
        context = Math.Min(context, lm.Config.MaxPositionEmbeddings);
        foreach (var id in ids)
            if (id >= lm.Config.VocabSize) throw CliException.Model($"Token id {id} is outside the model's vocabulary [0, {lm.Config.VocabSize}): the tokenizer does not match the model.");
        var scorer = new AdaptiveExitScorer(lm, new AdaptiveExitOptions { Exit = ExitMode.Q(q), BatchSize = 1 });
        double ll = 0;
        var exits = new List<int>(ids.Length - 1);
        for (int start = 0; start < ids.Length - 1; start += context - 1)
        {
            int end = Math.Min(ids.Length, start + context);                               // window ids[start..end)
            using var scope = NewDisposeScope();
            using var window = tensor(ids[start..end].Select(i => (long)i).ToArray(), [1, end - start]);   // (1, L)
            using var score = scorer.Score(window);                                        // targets: the next token; none at L-1
            int n = end - start - 1;
            ll += score.GoldLogProbs.narrow(1, 0, n).to_type(ScalarType.Float64).sum().cpu().item<double>();
            exits.AddRange(score.ExitSteps.narrow(1, 0, n).cpu().data<long>().Select(x => (int)x + 1));
            if (end == ids.Length) break;
        }
        int count = exits.Count;
        return new DocumentScore(index, count, ll, Math.Exp(-ll / count), exits.Average(), perToken ? [.. exits] : null);
    }

    private static string ToJson(IReadOnlyList<DocumentScore> scores)
    {
        static double? F(double v) => double.IsFinite(v) ? v : null;
        var rows = scores.Select(s => new Dictionary<string, object?>
        {
            ["index"] = s.Index, ["tokens"] = s.Tokens, ["log_likelihood"] = s.LogLikelihood, ["perplexity"] = F(s.Perplexity),
            ["mean_exit_step"] = F(s.MeanExitStep), ["exit_steps"] = s.ExitSteps,
        }.Where(kv => kv.Key != "exit_steps" || kv.Value is not null).ToDictionary());
        return JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    private static string ToCsv(IReadOnlyList<DocumentScore> scores)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("index,tokens,log_likelihood,perplexity,mean_exit_step\n");
        foreach (var s in scores) sb.Append(c, $"{s.Index},{s.Tokens},{s.LogLikelihood:R},{s.Perplexity:R},{s.MeanExitStep:R}\n");
        return sb.ToString();
    }
}
