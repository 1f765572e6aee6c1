using System.CommandLine;
using System.Globalization;
using LoopRpt.Cli.Input;
using LoopRpt.Cli.Models;
using LoopRpt.Evaluation;

namespace LoopRpt.Cli.Commands;

/// <summary>
/// <c>looprpt evaluate</c>: the paper's tables on held-out text (docs/evaluation.md) — next-token accuracy at every loop
/// step s1..sT, the peak step, Q-exit ("adaptive") accuracy with mean exit steps, for all tokens and three nested buckets
/// by the base model's entropy (<c>--buckets</c>: thresholds in nats, or the top fractions of tokens).
/// </summary>
internal static class EvaluateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var baseModel = new Option<string?>("--base-model") { Description = "Model whose entropy defines the buckets (default: the evaluated model)." };
        var input = CommonOptions.Input();
        var column = CommonOptions.Column();
        var docs = CommonOptions.Documents();
        var evaluationOptions = new EvaluationOptionSet(LoopEvaluationOptions.Defaults.TableQValues);
        var name = new Option<string?>("--name") { Description = "Label of the model in the tables (default: the directory name)." };
        var output = new Option<string?>("--out", "-o") { Description = "Also write the markdown tables to this file." };
        var csv = new Option<string?>("--csv") { Description = "Also write the results as long-format CSV." };
        var device = CommonOptions.Device();
        var threads = CommonOptions.Threads();
        var cmd = new Command("evaluate", "Per-step, peak and adaptive (Q-exit) accuracy with mean exit steps, overall and by entropy bucket.")
        { model, baseModel, input, column, docs, name, output, csv, device, threads };
        evaluationOptions.AddTo(cmd);
        cmd.SetAction(pr =>
        {
            var ctx = CliContext.Require();
            var (options, s, b, max) = evaluationOptions.Read(pr);
            if (pr.GetValue(output) is { } mdOut) OutputPaths.File(mdOut, "--out");
            if (pr.GetValue(csv) is { } csvOut) OutputPaths.File(csvOut, "--csv");
            var texts = Corpus.Read(pr.GetRequiredValue(input), pr.GetValue(docs), pr.GetValue(column));
            Devices.SetThreads(pr.GetValue(threads));
            using var session = ModelSession.Load(pr.GetRequiredValue(model), pr.GetValue(device)!, "float32", ctx.Error);
            using var baseSession = pr.GetValue(baseModel) is { } bm ? ModelSession.Load(bm, pr.GetValue(device)!, "float32", ctx.Error) : null;
            CommonOptions.FitsContext(s, session.Model.Config.MaxPositionEmbeddings);
            if (baseSession is not null) CommonOptions.FitsContext(s, baseSession.Model.Config.MaxPositionEmbeddings);
            var tokens = EvaluationInputs.Stream(texts, session.RequireCodec(), session.Model.Config.VocabSize, max, s);
            var label = pr.GetValue(name) ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(pr.GetRequiredValue(model))));
            var evaluation = new LoopEvaluator(options)
                .Evaluate(session.Model, LoopEvaluator.Windows(tokens, b, s), baseSession?.Model, label);
            var markdown = Report(evaluation);
            ctx.Output.Write(markdown);
            if (pr.GetValue(output) is { } md) { CommonOptions.EnsureParent(md); File.WriteAllText(md, markdown); }
            if (pr.GetValue(csv) is { } c) { CommonOptions.EnsureParent(c); File.WriteAllText(c, evaluation.ToCsv()); }
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary>The evaluator's tables plus a peak / adaptive summary line per bucket.</summary>
    internal static string Report(LoopEvaluation e)
    {
        var C = CultureInfo.InvariantCulture;
        var sb = new System.Text.StringBuilder(e.ToMarkdown());
        sb.Append("\nSummary (accuracy %):\n\n| bucket | tokens | peak step | peak | last | ")
          .Append(string.Join(" | ", e.QValues.Select(q => string.Format(C, "q={0:0.###} acc @ exit", q)))).Append(" |\n|---|---:|---:|---:|---:|")
          .Append(string.Concat(e.QValues.Select(_ => "---:|"))).Append('\n');
        foreach (var b in e.Buckets)
        {
            int peak = b.Tokens == 0 ? 0 : Enumerable.Range(0, b.StepAccuracy.Count).MaxBy(t => b.StepAccuracy[t]);
            sb.Append(C, $"| {b.Label} | {b.Tokens} | s{peak + 1} | {100 * b.StepAccuracy[peak]:F2} | {100 * b.LastStepAccuracy:F2} | ")
              .Append(string.Join(" | ", b.QExit.Select(p => string.Format(C, "{0:F2} @ {1:F2}", 100 * p.Accuracy, p.MeanExitStep)))).Append(" |\n");
        }
        return sb.ToString();
    }
}
