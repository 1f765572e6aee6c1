using LoopRpt.Data;
using LoopRpt.QuickStart;

namespace LoopRpt.Tests.Cli;

public sealed class QuickStartTests
{
    [Fact]
    public void ChaseLinesHoldTheirComputedAnswerAndHopCount()
    {
        var seen = new HashSet<int>();
        foreach (var line in PointerChaseCorpus.Lines(300, maxHops: 4, seed: 5))
        {
            // An independent interpreter of the line: parse the edges, follow pointers until a letter points to itself.
            var parts = line.Text.Split(';');
            var edges = parts.TakeWhile(p => !p.StartsWith('?')).ToArray();
            Assert.Equal(PointerChaseCorpus.Chains * 5, edges.Length);
            var map = edges.ToDictionary(e => e[0], e => e[1]);
            Assert.Equal(PointerChaseCorpus.Chains, map.Count(kv => kv.Key == kv.Value));            // one end per chain
            var queries = parts.Skip(edges.Length).ToArray();
            Assert.Equal(line.Queries.Count, queries.Length);
            Assert.Equal(queries.Length, queries.Select(q => q[1]).Distinct().Count());                // distinct starts
            for (int i = 0; i < queries.Length; i++)
            {
                char p = queries[i][1];
                int hops = 0;
                while (map[p] != p) { p = map[p]; hops++; }
                Assert.Equal(char.ToUpperInvariant(p), queries[i][2]);
                Assert.Equal(hops, line.Queries[i].Hops);
                Assert.Equal(char.ToUpperInvariant(p), line.Text[line.Queries[i].AnswerIndex]);
                seen.Add(hops);
            }
        }
        Assert.Equal([1, 2, 3, 4], seen.Order());
    }

    [Fact]
    public void EveryEdgeIsOneTokenAndOnlySelectedAnswersAreTargets()
    {
        var tokenizer = PointerChaseCorpus.Tokenizer();
        Assert.Single(tokenizer.Encode("fa"));
        Assert.Equal(4, tokenizer.Encode(";?mH").Length);
        var lines = PointerChaseCorpus.Lines(8, maxHops: 4, seed: 3);
        var source = new ChaseBatchSource(tokenizer, 8, maxHops: 4, curriculumSteps: 0, answerOnly: true, seed: 1);
        var batch = ChaseBatchSource.Batch(tokenizer, lines, source.SequenceLength, q => q.Hops == 2);
        int eot = tokenizer.EosTokenId!.Value;
        for (int b = 0; b < lines.Count; b++)
        {
            var ids = tokenizer.Encode(lines[b].Text);
            Assert.True(ids.Length <= source.SequenceLength);
            var row = Enumerable.Range(0, source.SequenceLength).Select(i => batch.Targets[b * source.SequenceLength + i]).ToArray();
            Assert.Equal(lines[b].Queries.Count(q => q.Hops == 2), row.Count(t => t != TokenBatch.IgnoreIndex));
            // Each target sits where the input is a query's lower-case letter and is that query's upper-case answer.
            for (int i = 0; i < row.Length; i++)
                if (row[i] != TokenBatch.IgnoreIndex)
                {
                    Assert.Equal("?", tokenizer.Decode([(int)batch.Inputs[b * source.SequenceLength + i - 1]]));
                    Assert.True(char.IsUpper(tokenizer.Decode([(int)row[i]]).Single()));
                    Assert.Equal(ids[i], row[i]);
                }
            Assert.Equal(eot, batch.Inputs[b * source.SequenceLength]);
        }
        // The curriculum: only k = 1 at the first step, every k from CurriculumSteps on.
        var curriculum = new ChaseBatchSource(tokenizer, 4, maxHops: 4, curriculumSteps: 100, answerOnly: true, seed: 1);
        Assert.Equal(1, curriculum.MaxHopsAt(0));
        Assert.Equal(4, curriculum.MaxHopsAt(100));
    }

    [Fact]
    public void BarsAreCheckedAgainstTheirThresholds()
    {
        var dir = CliRunner.TempDir();
        var result = QuickStartPipeline.Run(QuickStartSettings.Quick(), dir, new StringWriter());
        var bars = QuickStartPipeline.Bars(result.ByHops.Select(h => (h.Hops, h.Before)).ToArray());
        var k1 = result.ByHops[0].Before["All"];
        Assert.Equal(k1.LastStepAccuracy >= 0.90, bars[0].Met);
        var last = result.ByHops[^1].Before["All"];
        Assert.Equal(last.LastStepAccuracy - last.StepAccuracy[0] >= 0.30, bars[2].Met);
    }

    [Fact]
    public void QuickModeRunsTheWholePipelineAndWritesTablesAndPlots()
    {
        var dir = CliRunner.TempDir();
        var log = new StringWriter();
        var result = QuickStartPipeline.Run(QuickStartSettings.Quick(), dir, log);
        foreach (var f in new[] { "README.md", "answers-by-hops.md", "results.csv", "pareto.svg", "pareto-by-hops.svg", "tokenizer.json", "heldout.txt" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        Assert.Equal(2, result.ByHops.Count);
        Assert.All(result.ByHops, h => Assert.Equal(4, h.Before.Steps));
        Assert.All(result.ByHops, h => Assert.Equal(h.Before["All"].Tokens, h.After["All"].Tokens));
        Assert.Equal(4, result.Bars.Count);
        Assert.Contains("| s1 | s2 | s3 | s4 |", File.ReadAllText(Path.Combine(dir, "answers-by-hops.md")));
        Assert.Contains("progress stage=looprpt", log.ToString());
        // The trained models are ordinary model directories the CLI can use.
        var r = CliRunner.Run("score", "--model", Path.Combine(dir, "models", "looprpt"), "--input", Path.Combine(dir, "heldout.txt"), "--format", "Csv");
        Assert.True(r.Code == LoopRpt.Cli.ExitCodes.Success, r.ToString());
    }

    [Fact]
    public void TheMultiSeedExperimentRunsOnTheTaskWithOneEvaluationSetPerHopCount()
    {
        var dir = CliRunner.TempDir();
        var settings = QuickStartSettings.Quick() with { LoopRptSteps = 0 };
        QuickStartPipeline.Run(settings, dir, new StringWriter());
        var exp = Path.Combine(dir, "experiment");
        var r = QuickStartPipeline.RunExperiment(settings, dir, exp, seeds: 2, steps: 2, learningRate: 1e-4, new StringWriter());
        var csv = File.ReadAllLines(Path.Combine(exp, "results.csv"));
        foreach (var set in new[] { "all", "k=1", "k=2" })
            foreach (var arm in new[] { "stage1-equal-steps", "stage1-equal-compute", "looprpt", "looprpt-all-tokens" })
                foreach (var seed in new[] { "1", "2" })
                    Assert.Contains(csv, l => l.StartsWith($"{set},{arm},{seed},", StringComparison.Ordinal));
        Assert.True(r.Cost is { Ratio: > 0 });
        Assert.Contains("k=2", File.ReadAllText(Path.Combine(exp, "report.md")));
    }

    [Fact]
    public void LowerCaseAnswersAreTheChainEndsLetterAndNeedCharacterTokens()
    {
        var upper = PointerChaseCorpus.Lines(20, maxHops: 3, seed: 9);
        var lower = PointerChaseCorpus.Lines(20, maxHops: 3, seed: 9, upperCaseAnswers: false);
        for (int i = 0; i < upper.Count; i++)
            foreach (var q in lower[i].Queries)
                Assert.Equal(char.ToLowerInvariant(upper[i].Text[q.AnswerIndex]), lower[i].Text[q.AnswerIndex]);
        var chars = PointerChaseCorpus.Tokenizer(pairTokens: false);
        var batch = ChaseBatchSource.Batch(chars, lower, PointerChaseCorpus.InputTokens(PointerChaseCorpus.Chains, 3, PointerChaseCorpus.Queries, pairTokens: false), _ => true);
        Assert.Equal(lower.Sum(l => l.Queries.Count), batch.Targets.Count(t => t != TokenBatch.IgnoreIndex));
        Assert.Throws<ArgumentException>(() => new ChaseBatchSource(PointerChaseCorpus.Tokenizer(), 4, 3, 0, true, 1, pairTokens: true, upperCaseAnswers: false));
    }

    [Fact]
    public void EndFirstListsEveryEdgeAfterItsTargetsEdgeAndInterleavesTheChains()
    {
        int interleaved = 0;
        foreach (var line in PointerChaseCorpus.Lines(200, maxHops: 3, seed: 11, letters: 12, chains: 3, endFirst: true))
        {
            var edges = line.Text.Split(';').TakeWhile(p => !p.StartsWith('?')).ToArray();
            var position = edges.Select((e, i) => (e, i)).ToDictionary(x => x.e[0], x => x.i);
            foreach (var e in edges.Where(e => e[0] != e[1]))
                Assert.True(position[e[1]] < position[e[0]], $"{e} listed before its target's edge in {line.Text}");
            // Chains of one line are not listed one after another every time: some edge follows an edge of another chain
            // that is not its own chain's next edge.
            var end = edges.ToDictionary(e => e[0], e => e[1]);
            char EndOf(char c) { while (end[c] != c) c = end[c]; return c; }
            if (edges.Zip(edges.Skip(1)).Any(p => EndOf(p.First[0]) != EndOf(p.Second[0]))) interleaved++;
        }
        Assert.True(interleaved > 150, $"only {interleaved} of 200 lines interleave their chains");
    }

    [Fact]
    public void EdgeLabelsNameEachEdgesChainEndAtTheEdgeTokenAndNeverAppearAsInputs()
    {
        var tokenizer = PointerChaseCorpus.Tokenizer(12);
        var lines = PointerChaseCorpus.Lines(16, maxHops: 3, seed: 4, letters: 12, chains: 3, queries: 2, endFirst: true);
        int length = PointerChaseCorpus.InputTokens(3, 3, 2, pairTokens: true);
        var batch = ChaseBatchSource.Batch(tokenizer, lines, length, _ => true, edgeLabels: true);
        var edgeHops = new HashSet<int>();
        for (int b = 0; b < lines.Count; b++)
        {
            // An independent interpreter: follow the pointers of each edge's source to its chain's end.
            var edges = lines[b].Text.Split(';').TakeWhile(p => !p.StartsWith('?')).ToArray();
            var map = edges.ToDictionary(e => e[0], e => e[1]);
            for (int i = 0; i < edges.Length; i++)
            {
                char p = edges[i][0];
                int hops = 0;
                while (map[p] != p) { p = map[p]; hops++; }
                int position = 2 * i + 1;                                            // end-of-text, then edge ';' edge ';' ...
                Assert.Equal(edges[i], tokenizer.Decode([(int)batch.Inputs[b * length + position]]));
                Assert.Equal(char.ToUpperInvariant(p).ToString(), tokenizer.Decode([(int)batch.Targets[b * length + position]]));
                Assert.Equal(hops, lines[b].Edges[i].Hops);
                Assert.NotEqual(batch.Targets[b * length + position], batch.Inputs[b * length + position + 1]);   // a label, not the next input
                edgeHops.Add(hops);
            }
            // Every other target is a query's answer.
            int targets = Enumerable.Range(0, length).Count(i => batch.Targets[b * length + i] != TokenBatch.IgnoreIndex);
            Assert.Equal(edges.Length + lines[b].Queries.Count, targets);
        }
        Assert.Equal([0, 1, 2, 3], edgeHops.Order());
        Assert.Throws<ArgumentException>(() => new ChaseBatchSource(PointerChaseCorpus.Tokenizer(pairTokens: false), 4, 3, 0, true, 1, pairTokens: false, edgeLabels: true));
    }
}
