using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using LoopRpt.Cli.Input;
using LoopRpt.Cli.Models;
using LoopRpt.Inference;
using LoopRpt.Model;

namespace LoopRpt.Cli.Commands;

/// <summary>Output format of <c>looprpt score</c>.</summary>
public enum ScoreFormat
{
    /// <summary>A JSON array, one object per document.</summary>
    Json,
    /// <summary>CSV with a header row, one row per document.</summary>
    Csv,
}

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
        var perToken = new Option<bool>("--per-token") { Description = "Include each token's exit step and log-probability (JSON only)." };
        var context = new Option<int>("--context") { Description = "Longest window per forward pass (longer documents are scored in windows sharing one token).", DefaultValueFactory = _ => DocumentScorerOptions.Defaults.ContextLength };
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
            IReadOnlyList<int>[] documents = texts is null
                ? [CommonOptions.ParseIds(idsText!, session.Model.Config.VocabSize)]
                : Encode(session.CodecOrFile(pr.GetValue(tokenizer)) ?? session.RequireCodec(), texts);
            var scorer = new DocumentScorer(session.Model, new DocumentScorerOptions { Exit = ExitMode.Q(qv), ContextLength = ctxLen });
            IReadOnlyList<ScoredDocument> scores;
            try
            {
                scores = scorer.Score(documents);
            }
            catch (ArgumentOutOfRangeException e) when (e.ParamName == "documents")
            {
                throw CliException.Model(e.Message.Split(" (Parameter '")[0] + " The tokenizer does not match the model.", e);
            }
            double elapsed = clock.Elapsed.TotalSeconds;
            var text = pr.GetValue(format) == ScoreFormat.Json ? ToJson(scores, pr.GetValue(perToken)) : ToCsv(scores);
            if (outPath is null) ctx.Output.Write(text);
            else
            {
                CommonOptions.EnsureParent(outPath);
                File.WriteAllText(outPath, text);
            }
            var all = ScoreTotals.Of(scores);
            long n = all.ScoredTokens;
            var summary = string.Create(CultureInfo.InvariantCulture,
                $"score documents={scores.Count} tokens={n} nll={all.NegativeLogLikelihood:F4} ppl={all.Perplexity:F3} mean_exit_step={all.MeanExitStep:F3} loops={session.Model.Config.TotalUtSteps} compute_fraction={all.ComputeFraction:F3} q={qv} elapsed_s={elapsed:F2} tok_s={n / Math.Max(elapsed, 1e-9):F1}");
            (outPath is null ? ctx.Error : ctx.Output).WriteLine(summary);
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary>The documents' token ids, each starting with the codec's BOS id when it has one.</summary>
    private static IReadOnlyList<int>[] Encode(Tokenization.TextCodec codec, IReadOnlyList<string> texts)
        => texts.Select(t => (IReadOnlyList<int>)codec.Encode(t, addBos: true)).ToArray();

    /// <summary>
    /// One object per document: <c>tokens</c> = scored tokens (the document's tokens after the first), the log-likelihood,
    /// perplexity and mean exit step of the core scorer (docs/adaptive-exit.md), and with <paramref name="perToken"/> each
    /// scored token's exit step (1-indexed) and log-probability.
    /// </summary>
    private static string ToJson(IReadOnlyList<ScoredDocument> scores, bool perToken)
    {
        static double? F(double v) => double.IsFinite(v) ? v : null;
        var rows = scores.Select((s, i) =>
        {
            var row = new Dictionary<string, object?>
            {
                ["index"] = i, ["tokens"] = s.ScoredTokens, ["log_likelihood"] = s.LogLikelihood, ["perplexity"] = F(s.Perplexity),
                ["mean_exit_step"] = F(s.MeanExitStep),
            };
            if (perToken)
            {
                row["exit_steps"] = s.ExitSteps.Select(x => (int)x).ToArray();
                row["token_log_probs"] = s.TokenLogProbabilities;
            }
            return row;
        });
        return JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    private static string ToCsv(IReadOnlyList<ScoredDocument> scores)
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("index,tokens,log_likelihood,perplexity,mean_exit_step\n");
        for (int i = 0; i < scores.Count; i++)
        {
            var s = scores[i];
            sb.Append(c, $"{i},{s.ScoredTokens},{s.LogLikelihood:R},{s.Perplexity:R},{s.MeanExitStep:R}\n");
        }
        return sb.ToString();
    }
}
